// SPDX-License-Identifier: Apache-2.0
// kinko's cold wallet for Ethereum (docs/design/ethereum.md, "Cold setup"): N owners fixed at
// deployment, sorted and distinct; a threshold M; a nonce. One function moves anything, and
// only with exactly M signatures by distinct owners, in increasing address order, over an
// EIP-712 digest binding the chain id, this contract, the nonce, `to`, `value` and `data`.
// ColdMultisig.bin is this file compiled by solcjs 0.8.28 (optimizer on, 200 runs);
// crates/chain/tests/it/eth.rs recompiles it and compares.
pragma solidity 0.8.28;

contract ColdMultisig {
    bytes32 private constant DOMAIN_TYPEHASH = keccak256("EIP712Domain(uint256 chainId,address verifyingContract)");
    bytes32 private constant EXECUTE_TYPEHASH =
        keccak256("Execute(address to,uint256 value,bytes data,uint256 nonce)");
    uint256 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    address[] private owners_;
    mapping(address => bool) public isOwner;
    uint256 public immutable threshold;
    uint256 public nonce;

    event Executed(uint256 indexed nonce, address indexed to, uint256 value, bytes data);

    constructor(address[] memory initialOwners, uint256 m) {
        require(initialOwners.length <= 16 && m >= 1 && m <= initialOwners.length, "threshold");
        address last = address(0);
        for (uint256 i = 0; i < initialOwners.length; i++) {
            require(initialOwners[i] > last, "owners sorted");
            isOwner[initialOwners[i]] = true;
            last = initialOwners[i];
        }
        owners_ = initialOwners;
        threshold = m;
    }

    receive() external payable {}

    function owners() external view returns (address[] memory) {
        return owners_;
    }

    function digest(address to, uint256 value, bytes calldata data, uint256 n) public view returns (bytes32) {
        bytes32 domain = keccak256(abi.encode(DOMAIN_TYPEHASH, block.chainid, address(this)));
        bytes32 body = keccak256(abi.encode(EXECUTE_TYPEHASH, to, value, keccak256(data), n));
        return keccak256(abi.encodePacked(hex"1901", domain, body));
    }

    function execute(address to, uint256 value, bytes calldata data, bytes calldata signatures) external {
        require(signatures.length == 65 * threshold, "signature count");
        bytes32 d = digest(to, value, data, nonce);
        address last = address(0);
        for (uint256 i = 0; i < threshold; i++) {
            bytes32 r = bytes32(signatures[i * 65:i * 65 + 32]);
            bytes32 s = bytes32(signatures[i * 65 + 32:i * 65 + 64]);
            uint8 v = uint8(signatures[i * 65 + 64]);
            require(uint256(s) <= HALF_ORDER && (v == 27 || v == 28), "signature form");
            address signer = ecrecover(d, v, r, s);
            require(signer > last && isOwner[signer], "signer");
            last = signer;
        }
        nonce += 1;
        (bool ok,) = to.call{value: value}(data);
        require(ok, "call failed");
        emit Executed(nonce - 1, to, value, data);
    }
}
