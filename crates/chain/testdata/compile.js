// Compiles a contract of this folder with solcjs and prints its deployment bytecode (hex, no 0x).
// Usage: node compile.js PATH_TO_SOLC_MODULE [NAME]   (NAME.sol, contract NAME; default TestUsd)
const solc = require(process.argv[2]);
const fs = require('fs');
const path = require('path');
const name = process.argv[3] || 'TestUsd';
const file = name + '.sol';
const input = {
  language: 'Solidity',
  sources: { [file]: { content: fs.readFileSync(path.join(__dirname, file), 'utf8') } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    metadata: { bytecodeHash: 'none', appendCBOR: false },
    outputSelection: { '*': { '*': ['evm.bytecode.object'] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter((e) => e.severity === 'error');
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join('\n'));
  process.exit(1);
}
process.stdout.write(out.contracts[file][name].evm.bytecode.object);
