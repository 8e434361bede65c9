// Times TorchCheckpointReader on one file, `repeats` times: open (zip + pickle + checks) and read
// every tensor. Driven by bench/torch_read_bench.py.
//
//     torch-checkpoint-bench FILE [REPEATS] [fresh|reuse]
//
// fresh (default): each tensor goes into its own newly allocated buffer, all kept alive until the
//   run ends, as torch.load's result dict keeps its tensors (page faults included).
// reuse: every tensor goes into one buffer allocated and touched before timing (the reader's own
//   cost: zip, pickle, checks and the copies out of the page cache).
// Prints one JSON object: {"seconds": [...], "tensors": N, "bytes": B, "checksum": C}
import Foundation
import TorchCheckpoint

let arguments = CommandLine.arguments
let repeats = arguments.count > 2 ? Int(arguments[2]) ?? 0 : 5
let mode = arguments.count > 3 ? arguments[3] : "fresh"
guard arguments.count >= 2, repeats > 0, mode == "fresh" || mode == "reuse" else {
    FileHandle.standardError.write(Data("usage: torch-checkpoint-bench FILE [REPEATS] [fresh|reuse]\n".utf8))
    exit(2)
}

/// One word per 4 KiB page, so the reads cannot be skipped and every page is touched.
func pageChecksum(_ buffer: UnsafeMutableRawBufferPointer) -> UInt64 {
    var sum: UInt64 = 0
    var offset = 0
    while offset + 8 <= buffer.count {
        sum &+= buffer.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        offset += 4096
    }
    return sum
}

var seconds: [Double] = []
var tensorCount = 0
var byteCount = 0
var checksum: UInt64 = 0
do {
    let probe = try TorchCheckpointReader(path: arguments[1])
    let largest = probe.entries.map(\.byteCount).max() ?? 0
    let shared = UnsafeMutableRawBufferPointer.allocate(byteCount: max(largest, 1), alignment: 64)
    defer { shared.deallocate() }
    shared.initializeMemory(as: UInt8.self, repeating: 0)
    for _ in 0..<repeats {
        let start = DispatchTime.now().uptimeNanoseconds
        let reader = try TorchCheckpointReader(path: arguments[1])
        var bytes = 0
        var sum: UInt64 = 0
        var buffers: [UnsafeMutableRawBufferPointer] = []
        for entry in reader.entries {
            let buffer: UnsafeMutableRawBufferPointer
            if mode == "reuse" {
                buffer = UnsafeMutableRawBufferPointer(rebasing: shared[0..<entry.byteCount])
            } else {
                buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: entry.byteCount, alignment: 64)
                buffers.append(buffer)
            }
            try reader.read(entry, into: buffer)
            sum &+= pageChecksum(buffer)
            bytes += entry.byteCount
        }
        seconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        for buffer in buffers { buffer.deallocate() }
        tensorCount = reader.entries.count
        byteCount = bytes
        checksum = sum
    }
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(1)
}
print("{\"seconds\": \(seconds), \"tensors\": \(tensorCount), \"bytes\": \(byteCount), \"checksum\": \(checksum)}")
