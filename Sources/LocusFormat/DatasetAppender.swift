import HDF5

/// Appends to a 1-D dataset front to back in pieces of whole chunks (a compressed chunk is written
/// once, never read back and rewritten), and digests the bytes on the way (spec §1.8).
final class DatasetAppender {
    private let dataset: Dataset
    private let elementBytes: Int
    private let memType: Datatype
    private var pending: [UInt8] = []
    private let pieceBytes: Int
    private var elementsWritten = 0
    private var digest = TensorDigester()

    init(_ dataset: Dataset, elementBytes: Int, memType: Datatype, chunkElements: Int) {
        self.dataset = dataset; self.elementBytes = elementBytes; self.memType = memType
        pieceBytes = max(1, chunkElements) * elementBytes
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var rest = bytes
        if !pending.isEmpty {
            let n = min(pieceBytes - pending.count, rest.count)
            pending += UnsafeRawBufferPointer(rebasing: rest[0..<n])
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            if pending.count == pieceBytes { try pending.withUnsafeBytes { try write($0) }; pending.removeAll(keepingCapacity: true) }
        }
        let whole = (rest.count / pieceBytes) * pieceBytes
        if whole > 0 { try write(UnsafeRawBufferPointer(rebasing: rest[0..<whole])) }
        if whole < rest.count { pending += UnsafeRawBufferPointer(rebasing: rest[whole...]) }
    }

    func finish() throws {
        if !pending.isEmpty { try pending.withUnsafeBytes { try write($0) }; pending = [] }
        try dataset.setAttribute(DataDigest.attribute, DataDigest.text(digest.finalize()))
    }

    private func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        let n = bytes.count / elementBytes
        try dataset.write(bytes, memType: memType, start: [elementsWritten], count: [n])
        digest.update(bytes)
        elementsWritten += n
    }
}
