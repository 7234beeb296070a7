"""NTIRE 2024 AIGC quality, AIGCQA-30K val set: `python AIGC_DB_AIGCQA30K_VAL.py --checkpoint CKPT [...]` is
`ipce predict --preset aigcqa30k --subset val --submission --data-root ./data [...]`; writes output.txt,
readme.txt and submission.zip into --out (default submissions/val).

The final entry: --checkpoint A.safetensors --checkpoint B.safetensors --prompt-prefix none
--prompt-prefix generator --combine product --resize 512 --patches 15
"""
import sys

from ipce.cli import main as ipce_main


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return ipce_main(["predict", "--preset", "aigcqa30k", "--subset", "val", "--submission", "--data-root", "./data",
                      *argv])


if __name__ == "__main__":
    sys.exit(main())
