"""`rnnspec lsp`: a language server for .rnn files (pygls), never importing torch.

`scan` reads half-typed text forgivingly; `features` answers hover, completion and
go-to-definition from the scan and `rnnspec.lang.statements`; `app` is the pygls
server (diagnostics from `parse`, formatting from `fmt`, positions converted).
"""
