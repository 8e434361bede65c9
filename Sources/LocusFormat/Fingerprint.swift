import Crypto
import Dispatch
import Foundation

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

/// Tensor digests (§1.5) of whole tensors whose bytes stay valid while they are hashed (a memory
/// map of the source), computed leaf by leaf on a background thread while the caller writes the
/// same bytes out. Leaves are taken in order (tensor by tensor, as given); the caller hashes
/// leaves too whenever it waits (`keepUp`, `digest`), so the two cores share the work, and the
/// pages of the map that are both written and hashed are released as the work goes (`MappedFile.
/// release`), so resident memory stays bounded for any size of source.
final class BackgroundTensorDigests: @unchecked Sendable {
    private let tensors: [UnsafeRawBufferPointer]
    /// Leaf k covers bytes [leafOffset[k], leafOffset[k] + leafCount[k]) of tensor leafTensor[k].
    private var leafTensor: [Int] = [], leafOffset: [Int] = [], leafCount: [Int] = []
    /// First leaf of each tensor (and the total at the end).
    private var firstLeaf: [Int] = []
    private let digests: UnsafeMutablePointer<UInt8>
    private let map: MappedFile?
    private let condition = NSCondition()
    private var claimed = 0, inFlight = 0, stopped = false
    private var finished: [Bool]
    /// Leaves [0, donePrefix) are all hashed; leaves [0, released) have had their pages released.
    private var donePrefix = 0, released = 0
    /// How far the caller may write ahead of the hashing before it hashes too.
    static let maxLagBytes = 64 << 20

    init(_ tensors: [UnsafeRawBufferPointer], map: MappedFile?) {
        self.tensors = tensors
        self.map = map
        for (i, t) in tensors.enumerated() {
            firstLeaf.append(leafTensor.count)
            var o = 0
            while o < t.count {
                let n = min(FingerprintHasher.leafBytes, t.count - o)
                leafTensor.append(i); leafOffset.append(o); leafCount.append(n)
                o += n
            }
        }
        firstLeaf.append(leafTensor.count)
        digests = .allocate(capacity: max(1, leafTensor.count) * 32)
        finished = Array(repeating: false, count: leafTensor.count)
        DispatchQueue.global(qos: .userInitiated).async { [self] in while hashOne() {} }
    }

    deinit { stop(); digests.deallocate() }

    /// Claims and hashes the next leaf; false when none is left.
    @discardableResult
    private func hashOne() -> Bool {
        condition.lock()
        guard !stopped, claimed < leafTensor.count else { condition.unlock(); return false }
        let k = claimed
        claimed += 1; inFlight += 1
        condition.unlock()
        let bytes = UnsafeRawBufferPointer(rebasing: tensors[leafTensor[k]][leafOffset[k]..<(leafOffset[k] + leafCount[k])])
        var h = SHA256()
        h.update(bufferPointer: bytes)
        h.finalize().withUnsafeBytes { UnsafeMutableRawPointer(digests + 32 * k).copyMemory(from: $0.baseAddress!, byteCount: 32) }
        condition.lock()
        finished[k] = true
        while donePrefix < finished.count && finished[donePrefix] { donePrefix += 1 }
        inFlight -= 1
        condition.broadcast()
        condition.unlock()
        return true
    }

    /// Called by the writer once it has written every byte of tensors [0, tensor) and the first
    /// `bytes` bytes of `tensor`: releases the pages that are written and hashed, and hashes on
    /// this thread while the hashing lags more than `maxLagBytes` behind.
    func keepUp(writtenThrough tensor: Int, bytes: Int) {
        let writtenLeaves = firstLeaf[min(tensor, tensors.count)] + (tensor < tensors.count ? bytes / FingerprintHasher.leafBytes : 0)
        while true {
            condition.lock()
            let lagging = donePrefix < min(writtenLeaves, leafCount.count) ? donePrefix..<min(writtenLeaves, leafCount.count) : 0..<0
            let lag = lagging.reduce(0) { $0 + leafCount[$1] }
            let releasable = min(donePrefix, writtenLeaves)
            let from = released
            released = max(released, releasable)
            condition.unlock()
            if let map, releasable > from { for k in from..<releasable { map.release(leaf(k)) } }
            if lag <= BackgroundTensorDigests.maxLagBytes || !hashOne() { return }
        }
    }

    private func leaf(_ k: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: tensors[leafTensor[k]][leafOffset[k]..<(leafOffset[k] + leafCount[k])])
    }

    /// The tensor digest of tensor `i`, hashing on this thread until its leaves are done.
    func digest(_ i: Int) -> [UInt8] {
        let leaves = firstLeaf[i]..<firstLeaf[i + 1]
        while true {
            condition.lock()
            let unclaimed = claimed < leaves.upperBound
            condition.unlock()
            if !unclaimed || !hashOne() { break }
        }
        condition.lock()
        while !leaves.allSatisfy({ finished[$0] }) && !stopped { condition.wait() }
        condition.unlock()
        return Array(SHA256.hash(data: UnsafeRawBufferPointer(start: digests + 32 * leaves.lowerBound, count: 32 * leaves.count)))
    }

    /// Every leaf hashed (helping) and every page released.
    func finishAll() {
        while hashOne() {}
        condition.lock()
        while inFlight > 0 { condition.wait() }
        condition.unlock()
        keepUp(writtenThrough: tensors.count, bytes: 0)
    }

    /// No new leaf is started; returns when none is in progress (the bytes may then be unmapped).
    func stop() {
        condition.lock()
        stopped = true
        while inFlight > 0 { condition.wait() }
        condition.unlock()
    }
}
