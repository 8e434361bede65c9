// Times TorchCheckpointReader on one file: open (zip + pickle + checks) and read every tensor
// into its own freshly allocated buffer, all kept alive until the run ends (as torch.load's
// result dict keeps its tensors), `repeats` times. Driven by bench/torch_read_bench.py.
//
//     torch-checkpoint-bench FILE [REPEATS]
// prints one JSON object: {"seconds": [...], "tensors": N, "bytes": B, "checksum": C}
import Foundation
import TorchCheckpoint

let arguments = CommandLine.arguments
guard arguments.count >= 2, let repeats = Int(arguments.count > 2 ? arguments[2] : "5"), repeats > 0 else {
    FileHandle.standardError.write("usage: torch-checkpoint-bench FILE [REPEATS]\n".data(using: .utf8)!)
    exit(2)
}
var seconds: [Double] = []
var tensorCount = 0
var byteCount = 0
var checksum: UInt64 = 0
do {
    for _ in 0..<repeats {
        let start = DispatchTime.now().uptimeNanoseconds
        let reader = try TorchCheckpointReader(path: arguments[1])
        var bytes = 0
        var sum: UInt64 = 0
        var buffers: [UnsafeMutableRawBufferPointer] = []
        for entry in reader.entries {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: entry.byteCount, alignment: 64)
            try reader.read(entry, into: buffer)
            // Touch the data so the read cannot be skipped: one word per 4 KiB page.
            var offset = 0
            while offset + 8 <= buffer.count {
                sum &+= buffer.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                offset += 4096
            }
            bytes += entry.byteCount
            buffers.append(buffer)
        }
        seconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        for buffer in buffers { buffer.deallocate() }
        tensorCount = reader.entries.count
        byteCount = bytes
        checksum = sum
    }
} catch {
    FileHandle.standardError.write("\(error)\n".data(using: .utf8)!)
    exit(1)
}
print("{\"seconds\": \(seconds), \"tensors\": \(tensorCount), \"bytes\": \(byteCount), \"checksum\": \(checksum)}")
