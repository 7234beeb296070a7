"""The method's texts, without torch: the level words and the template every model and check shares."""

# worst first; a text per level, the expected level is the score
LEVELS = ("badly", "poorly", "fairly", "well", "perfectly")
TEMPLATE = "a photo that {level} matches '{prompt}'"
