// Tokenizes files with the extension's TextMate grammar, as VS Code does
// (vscode-textmate on vscode-oniguruma), and prints {file: [[line, start, end,
// scopes], ...]} as JSON; start and end count UTF-16 code units.
// tests/lang/test_highlight_textmate.py runs it:
//   node tokenize.js GRAMMAR FILE...
// The packages come from ../node_modules (`npm install` in editors/vscode) or from
// the folder RNNSPEC_NODE_MODULES names.
"use strict";

const fs = require("fs");
const path = require("path");

const modules =
  process.env.RNNSPEC_NODE_MODULES || path.join(__dirname, "..", "node_modules");
const vsctm = require(path.join(modules, "vscode-textmate"));
const oniguruma = require(path.join(modules, "vscode-oniguruma"));

async function main() {
  const [grammarPath, ...files] = process.argv.slice(2);
  const wasm = fs.readFileSync(
    path.join(modules, "vscode-oniguruma", "release", "onig.wasm"),
  );
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (text) => new oniguruma.OnigString(text),
    }),
    loadGrammar: async () =>
      vsctm.parseRawGrammar(fs.readFileSync(grammarPath, "utf8"), grammarPath),
  });
  const grammar = await registry.loadGrammar("source.rnnspec");
  const out = {};
  for (const file of files) {
    const lines = fs.readFileSync(file, "utf8").split(/\r\n|\r|\n/);
    let stack = vsctm.INITIAL;
    const tokens = [];
    lines.forEach((line, number) => {
      const result = grammar.tokenizeLine(line, stack);
      for (const token of result.tokens) {
        tokens.push([number, token.startIndex, Math.min(token.endIndex, line.length), token.scopes]);
      }
      stack = result.ruleStack;
    });
    out[file] = tokens;
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
