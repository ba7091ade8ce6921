"""Stage 1, the language: spec text and experiment configs → the IR. No torch here.

`syntax` (lark: text → statements with positions) → `lower` (statements → `ir`, with
`diagnostics`); `printer` (IR → canonical text) and `formatter` (whole files, comments
kept); `config` (YAML/JSON/TOML/Hydra values → IR) and `schema` (the IR's JSON Schema).
"""
