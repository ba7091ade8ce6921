// The rnnspec extension: the .rnn language (see package.json) and its language
// server, `rnnspec lsp` on stdio, for diagnostics, hover, completion,
// go-to-definition and formatting.
"use strict";

const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

// The command that starts the server: settings rnnspec.server.command and
// rnnspec.server.args, `${workspaceFolder}` replaced by the first folder open.
function serverOptions() {
  const config = vscode.workspace.getConfiguration("rnnspec");
  const folders = vscode.workspace.workspaceFolders || [];
  const folder = folders.length ? folders[0].uri.fsPath : "";
  const expand = (text) => text.split("${workspaceFolder}").join(folder);
  const command = expand(config.get("server.command", "rnnspec"));
  const args = config.get("server.args", ["lsp"]).map(expand);
  // An Executable without a transport talks over stdin/stdout.
  return { run: { command, args }, debug: { command, args } };
}

function activate(context) {
  client = new LanguageClient(
    "rnnspec",
    "rnnspec language server",
    serverOptions(),
    { documentSelector: [{ language: "rnnspec" }] },
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate, serverOptions };
