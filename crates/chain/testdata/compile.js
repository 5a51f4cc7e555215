// Compiles TestUsd.sol with solcjs and prints the deployment bytecode (hex, no 0x).
// Usage: node compile.js PATH_TO_SOLC_MODULE
const solc = require(process.argv[2]);
const fs = require('fs');
const path = require('path');
const input = {
  language: 'Solidity',
  sources: { 'TestUsd.sol': { content: fs.readFileSync(path.join(__dirname, 'TestUsd.sol'), 'utf8') } },
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
process.stdout.write(out.contracts['TestUsd.sol'].TestUsd.evm.bytecode.object);
