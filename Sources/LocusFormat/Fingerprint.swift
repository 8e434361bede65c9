import Crypto

/// The base fingerprint of spec §1.5: SHA-256 over names, dtypes, shapes and raw bytes of every
/// tensor in ascending byte order of the names. Feed tensors in that order.
public struct FingerprintHasher {
    private var hasher = SHA256()
    private var lastName: String?

    public init() { hasher.update(data: Array("locus-fingerprint-v1\n".utf8)) }

    /// Starts a tensor; its raw little-endian bytes follow through `update(bytes:)`.
    public mutating func beginTensor(name: String, dtype: LocusDType, shape: [Int]) {
        if let lastName { precondition(TensorName.byteOrder(lastName, name), "fingerprint: tensors must come in name order") }
        lastName = name
        hasher.update(data: Array("\(name)\n\(dtype.rawValue)\n\(shape.map(String.init).joined(separator: ","))\n".utf8))
    }

    public mutating func update(bytes: UnsafeRawBufferPointer) { hasher.update(bufferPointer: bytes) }

    public func finalize() -> String {
        "sha256:" + hasher.finalize().map { String(format2hex: $0) }.joined()
    }
}

extension String {
    init(format2hex byte: UInt8) {
        let digits = Array("0123456789abcdef")
        self = String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }
}
