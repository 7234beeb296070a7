"""The bodies of `ipce serve`'s JSON API as pydantic models: the app reads a JSON score request
with ScoreRequest, answers with these models, and FastAPI writes its OpenAPI page (`/docs`,
`/openapi.json`) from them. ScoreForm is the multipart form of the same request (its files are read by
the app's form parser; the model names its fields)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

IMAGES = "the image files (PNG, JPEG, ...), in the order the scores come back"
PROMPT = "one prompt for every image: the prompt they were generated from (a prompt-free model needs none)"
PROMPTS = "one prompt per image, in the order of images (instead of prompt)"


class ScoreRequest(BaseModel):
    """POST /api/score as JSON: the images base64-encoded, and prompt or prompts."""
    model_config = ConfigDict(extra="forbid", strict=True)

    images: list[str] = Field(min_length=1, json_schema_extra={"items": {"type": "string", "format": "byte"}},
                              description=IMAGES + ", each base64-encoded (a data: URL is read too)")
    prompt: str | None = Field(None, description=PROMPT)
    prompts: list[str] | None = Field(None, description=PROMPTS)
    names: list[str] | None = Field(None, description="the images' file names, one per image: a model that reads "
                                                      "'{generator} {prompt}' takes each image's generator from it")


class ScoreForm(BaseModel):
    """POST /api/score as multipart/form-data: a file field per image, and prompt or prompts
    (repeated, one per image). A file's own name does what `names` does in JSON."""
    images: list[bytes] = Field(description=IMAGES + ", one file field named images each")
    prompt: str | SkipJsonSchema[None] = Field(None, description=PROMPT)
    prompts: list[str] | SkipJsonSchema[None] = Field(None, description=PROMPTS + "; the field repeated")


class FailedImage(BaseModel):
    """An image of the request that could not be read: it has no score."""
    index: int = Field(description="its place in the request's images, from 0")
    name: str = Field(description="its file name, or images[i] where the request gave none")
    error: str = Field(description="why it cannot be read, one line")


class ScoreResponse(BaseModel):
    """The scores of a request's images, in request order, on the model's scale (GET /api/health's
    scale). An image that cannot be read among good ones has the score null and is named in failed."""
    scores: list[float | None] = Field(description="one score per image, in request order; null for a failed image")
    partial: bool = Field(description="true when some image could not be read (see failed)")
    failed: list[FailedImage] = Field(description="the images that could not be read, with why")


class ErrorMessage(BaseModel):
    """A refused request: what is wrong and how to fix it, one line."""
    error: str = Field(description="one line naming the field, image or limit at fault")


class Health(BaseModel):
    """The loaded model, where and how it runs, and whether a token is required. Without the token
    the answer is only {"auth": true}; while the model loads, {"auth": ..., "ready": false}."""
    model: str = Field(description="the backbone of each model, joined by ' + ' for an ensemble")
    checkpoints: list[str] = Field(description="the checkpoints served, as given to ipce serve")
    combine: str = Field(description="how an ensemble's scores are combined (mean or product)")
    device: str = Field(description="the device the model runs on, e.g. cpu or cuda:0")
    precision: str = Field(description="the compute precision, e.g. fp32, bf16")
    scale: list[float] = Field(min_length=2, max_length=2, description="[lo, hi]: the range the scores are on")
    batch_size: int = Field(description="the most images scored in one batch")
    auth: bool = Field(description="whether every request needs the token (Authorization: Bearer <token>)")


class Ready(BaseModel):
    """Whether the model is loaded and requests are served."""
    ready: bool = Field(description="true once the model is loaded; until then the answer is 503")
