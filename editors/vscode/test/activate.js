// Loads extension.js with stand-ins for `vscode` and `vscode-languageclient/node`
// (no VS Code needed), activates it and prints, as JSON, the language client it
// created: tests/server/test_vscode_extension.py checks that it starts
// `rnnspec lsp` for .rnn documents.  node activate.js SETTINGS_JSON
"use strict";

const Module = require("module");
const path = require("path");

const settings = JSON.parse(process.argv[2] || "{}");
const created = [];
const fakes = {
  vscode: {
    workspace: {
      workspaceFolders: [{ uri: { fsPath: "/work/project" } }],
      getConfiguration: (section) => ({
        get: (key, fallback) => {
          const name = `${section}.${key}`;
          return name in settings ? settings[name] : fallback;
        },
      }),
    },
  },
  "vscode-languageclient/node": {
    LanguageClient: class {
      constructor(id, name, serverOptions, clientOptions) {
        created.push({ id, name, serverOptions, clientOptions });
        this.started = false;
      }
      start() {
        this.started = true;
        return Promise.resolve();
      }
      stop() {
        return Promise.resolve();
      }
    },
  },
};
const load = Module._load;
Module._load = function (request, ...rest) {
  return request in fakes ? fakes[request] : load.call(this, request, ...rest);
};

const extension = require(path.join(__dirname, "..", "extension.js"));
const context = { subscriptions: [] };
extension.activate(context).then(() => {
  process.stdout.write(
    JSON.stringify({ created, subscriptions: context.subscriptions.length }),
  );
});
