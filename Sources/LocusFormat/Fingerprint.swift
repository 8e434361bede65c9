import Crypto
import Dispatch

/// The base fingerprint of spec §1.5. Each tensor's raw bytes are cut into 1 MiB leaves whose
/// SHA-256 digests are hashed together into the tensor digest; the fingerprint is the SHA-256 of
/// a header line and the tensor digest for every tensor, in ascending byte order of the names.
/// Leaves make the work parallel (a single SHA-256 stream runs at ~1 GB/s, slower than the disk).
public struct FingerprintHasher {
    public static let leafBytes = 1 << 20
    private var outer = SHA256()
    private var tensor: TensorDigester?
    private var lastName: String?

    public init() { outer.update(data: Array("locus-fingerprint-v1\n".utf8)) }

    /// Starts a tensor; its raw little-endian bytes follow through `update(bytes:)`.
    public mutating func beginTensor(name: String, dtype: LocusDType, shape: [Int]) {
        if let lastName { precondition(TensorName.byteOrder(lastName, name), "fingerprint: tensors must come in name order") }
        finishTensor()
        lastName = name
        outer.update(data: Array("\(name)\n\(dtype.rawValue)\n\(shape.map(String.init).joined(separator: ","))\n".utf8))
        tensor = TensorDigester()
    }

    public mutating func update(bytes: UnsafeRawBufferPointer) {
        precondition(tensor != nil, "fingerprint: update before beginTensor")
        tensor!.update(bytes)
    }

    private mutating func finishTensor() { endTensor() }

    /// Ends the tensor in progress (if any) and returns its tensor digest, which a writer can
    /// store as the dataset's §1.8 `digest`; the next `beginTensor` or `finalize` needs no call.
    @discardableResult
    mutating func endTensor() -> [UInt8]? {
        guard let t = tensor else { return nil }
        let digest = t.finalize()
        outer.update(data: digest)
        tensor = nil
        return digest
    }

    /// Adds a whole tensor whose tensor digest is already known (a reader that computed it to
    /// check the tensor's own `digest`).
    mutating func addTensor(name: String, dtype: LocusDType, shape: [Int], digest: [UInt8]) {
        beginTensor(name: name, dtype: dtype, shape: shape)
        tensor = nil
        outer.update(data: digest)
    }

    public mutating func finalize() -> String {
        finishTensor()
        return "sha256:" + outer.finalize().map { String(format2hex: $0) }.joined()
    }
}

/// SHA-256 over the SHA-256 digests of consecutive 1 MiB leaves of one tensor's bytes.
struct TensorDigester {
    private var leafDigests: [UInt8] = []
    private var partial = SHA256()
    private var partialBytes = 0

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        let leaf = FingerprintHasher.leafBytes
        var start = 0
        // Top up the leaf in progress.
        if partialBytes > 0 {
            let n = min(leaf - partialBytes, bytes.count)
            partial.update(bufferPointer: UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
            partialBytes += n; start = n
            if partialBytes == leaf { closePartial() }
        }
        // Whole leaves, hashed in parallel.
        let whole = (bytes.count - start) / leaf
        if whole > 0 {
            var digests = [UInt8](repeating: 0, count: whole * 32)
            digests.withUnsafeMutableBytes { out in
                nonisolated(unsafe) let out = out
                nonisolated(unsafe) let bytes = bytes
                let start = start
                let hash: @Sendable (Int) -> Void = { i in
                    let lo = start + i * leaf
                    var h = SHA256(); h.update(bufferPointer: UnsafeRawBufferPointer(rebasing: bytes[lo..<(lo + leaf)])); let d = h.finalize()
                    d.withUnsafeBytes { out.baseAddress!.advanced(by: 32 * i).copyMemory(from: $0.baseAddress!, byteCount: 32) }
                }
                if whole == 1 { hash(0) } else { DispatchQueue.concurrentPerform(iterations: whole, execute: hash) }
            }
            leafDigests += digests
            start += whole * leaf
        }
        // Start the next leaf with the rest.
        if start < bytes.count {
            partial.update(bufferPointer: UnsafeRawBufferPointer(rebasing: bytes[start...]))
            partialBytes += bytes.count - start
        }
    }

    private mutating func closePartial() {
        leafDigests += Array(partial.finalize())
        partial = SHA256()
        partialBytes = 0
    }

    func finalize() -> [UInt8] {
        var copy = self
        if copy.partialBytes > 0 { copy.closePartial() }
        return Array(SHA256.hash(data: copy.leafDigests))
    }
}

extension String {
    init(format2hex byte: UInt8) {
        let digits = Array("0123456789abcdef")
        self = String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }
}
