"""Stage 1, the language: spec text and experiment configs → the IR. No torch here.

`syntax` (lark: text → statements with positions) → `link` (a file and its imports,
`extends` resolved; `versions` for the `rnnspec N` line) → `lower` (statements → `ir`,
with `diagnostics`; `overrides` for `--set`; `blame` names what made a statement
invalid); `printer` (IR → canonical text) and `formatter` (whole files, comments
kept); `explain` (where each value came from); `config` (YAML/JSON/TOML/Hydra values
→ IR, and the JSON Schema).
"""
