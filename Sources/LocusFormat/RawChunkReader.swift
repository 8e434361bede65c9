import CDeflate
import HDF5

/// Reads ranges of a 1-D byte dataset stored in chunks (packed mask bits, §1.6) by decoding the
/// chunks here instead of inside libhdf5.
///
/// libhdf5's thread-safe build runs one call at a time, and inflating a chunk inside `H5Dread`
/// holds that lock for the whole inflate: a thread reading masks and a thread writing the output
/// then take turns. Here only the raw read of a chunk's stored bytes is a libhdf5 call
/// (`H5Dread_chunk`, a copy); the fletcher32 check and the inflate run on the calling thread with
/// the lock free. Only the pipelines Locus writes for packed bits are decoded here — deflate,
/// fletcher32, both (in that order), or none. Any other pipeline, a chunk stored with a filter
/// skipped, and a chunk whose checksum or inflated length is wrong are read through libhdf5,
/// which applies its own checks and reports what is wrong, naming the dataset.
final class RawChunkReader {
    let dataset: Dataset
    let length: Int
    let chunkLength: Int
    private let inflates: Bool, checksums: Bool
    private var raw: [UInt8] = []
    private var scratch: [UInt8] = []
    /// libdeflate's decompressor (whole buffers, about twice zlib's inflate speed), made on first use.
    private var decompressor: OpaquePointer?
    deinit { if let decompressor { libdeflate_free_decompressor(decompressor) } }
    /// Chunks decoded here, and ranges read through libhdf5 instead (for tests and profiles).
    private(set) var decodedChunks = 0, libraryReads = 0

    /// nil when the dataset is not a chunked 1-D dataset of 1-byte elements with a pipeline decoded here.
    init?(_ ds: Dataset) {
        guard ds.type.size == 1, ds.type.typeClass == .integer else { return nil }
        let shape = ds.shape
        let plist = ds.creationProperties
        guard shape.count == 1, plist.layout == .chunked, let dims = plist.chunkDims, dims.count == 1, dims[0] > 0 else { return nil }
        let filters = plist.filters
        guard [[], [1], [3], [1, 3]].contains(filters) else { return nil }
        dataset = ds
        length = shape[0]
        chunkLength = dims[0]
        inflates = filters.first == 1
        checksums = filters.last == 3
    }

    /// Reads elements [start, start + out.count) into `out`.
    func read(from start: Int, into out: UnsafeMutableRawBufferPointer) throws {
        precondition(start >= 0 && start + out.count <= length)
        var at = start
        let end = start + out.count
        while at < end {
            let chunk = at / chunkLength * chunkLength
            let take = min(end, chunk + chunkLength) - at
            let dst = UnsafeMutableRawBufferPointer(rebasing: out[(at - start)..<(at - start + take)])
            let decoded: Bool
            if at == chunk && take == chunkLength {
                decoded = decode(chunk, into: dst)
            } else {
                // Part of a chunk (or the edge chunk, stored full-size): decode it whole, copy the part.
                if scratch.count < chunkLength { scratch = [UInt8](repeating: 0, count: chunkLength) }
                decoded = scratch.withUnsafeMutableBytes { s -> Bool in
                    guard decode(chunk, into: UnsafeMutableRawBufferPointer(rebasing: s[0..<chunkLength])) else { return false }
                    dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: s[(at - chunk)..<(at - chunk + take)]))
                    return true
                }
            }
            if decoded { decodedChunks += 1 } else {
                libraryReads += 1
                try dataset.read(into: dst, memType: .nativeUInt8, start: [at], count: [take])
            }
            at += take
        }
    }

    /// Decodes the chunk starting at element `chunk` into `dst` (exactly one chunk long); false
    /// when it must be read through libhdf5 instead.
    private func decode(_ chunk: Int, into dst: UnsafeMutableRawBufferPointer) -> Bool {
        // Deflate never grows data by more than a few bytes per 16 KiB block.
        let limit = chunkLength + chunkLength / 64 + 64
        guard let stored = (try? dataset.readRawChunk(at: [chunk], limit: limit, into: &raw)) ?? nil, stored.skippedFilters == 0 else { return false }
        return raw.withUnsafeBytes { r -> Bool in
            var body = UnsafeRawBufferPointer(rebasing: r[0..<stored.count])
            if checksums {
                guard Fletcher32.verify(body) else { return false }
                body = UnsafeRawBufferPointer(rebasing: body[0..<(body.count - 4)])
            }
            guard inflates else {
                guard body.count == chunkLength else { return false }
                dst.copyMemory(from: body)
                return true
            }
            guard body.count > 0 else { return false }
            if decompressor == nil { decompressor = libdeflate_alloc_decompressor() }
            guard let decompressor else { return false }
            // The deflate filter stores zlib streams; nil for the produced size demands exactly chunkLength bytes.
            return libdeflate_zlib_decompress(decompressor, body.baseAddress, body.count, dst.baseAddress, chunkLength, nil) == LIBDEFLATE_SUCCESS
        }
    }
}
