/// HDF5's fletcher32 filter checksum (filter id 3), for checking raw chunks read outside libhdf5.
///
/// The filter appends the 32-bit checksum of the filtered bytes, least significant byte first.
/// The sums run over 16-bit words taken most significant byte first (an odd last byte is a word's
/// high half), folded every 360 words so they cannot overflow; the result is sum2 << 16 | sum1.
/// Writers before HDF5 1.6.3 stored it with the two bytes of each 16-bit half swapped on
/// little-endian machines, and libhdf5 accepts both forms, so `verify` does too.
public enum Fletcher32 {
    public static func checksum(_ data: UnsafeRawBufferPointer) -> UInt32 {
        var sum1: UInt32 = 0, sum2: UInt32 = 0
        var words = data.count / 2
        var at = 0
        while words > 0 {
            let run = min(words, 360)
            words -= run
            for _ in 0..<run {
                sum1 &+= UInt32(data[at]) << 8 | UInt32(data[at + 1])
                sum2 &+= sum1
                at += 2
            }
            sum1 = (sum1 & 0xffff) &+ (sum1 >> 16)
            sum2 = (sum2 & 0xffff) &+ (sum2 >> 16)
        }
        if data.count % 2 == 1 {
            sum1 &+= UInt32(data[at]) << 8
            sum2 &+= sum1
            sum1 = (sum1 & 0xffff) &+ (sum1 >> 16)
            sum2 = (sum2 & 0xffff) &+ (sum2 >> 16)
        }
        sum1 = (sum1 & 0xffff) &+ (sum1 >> 16)
        sum2 = (sum2 & 0xffff) &+ (sum2 >> 16)
        return sum2 << 16 | sum1
    }

    /// Whether `chunk` (data followed by its 4-byte checksum) is intact; the data is `chunk` minus those 4 bytes.
    public static func verify(_ chunk: UnsafeRawBufferPointer) -> Bool {
        guard chunk.count >= 4 else { return false }
        let n = chunk.count - 4
        let stored = UInt32(chunk[n]) | UInt32(chunk[n + 1]) << 8 | UInt32(chunk[n + 2]) << 16 | UInt32(chunk[n + 3]) << 24
        let sum = checksum(UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
        let halvesSwapped = (sum & 0x00ff_00ff) << 8 | (sum >> 8) & 0x00ff_00ff
        return stored == sum || stored == halvesSwapped
    }
}
