/// The k-th largest of many non-negative keys without holding them: keys are UInt64 bit patterns
/// whose order is the order of the numbers they stand for (|x| as a Double's bits), read again on
/// every pass.
enum RadixSelect {
    /// The k-th largest key (k ≥ 1) of those `forEachKey(key, zeros)` produces — it calls
    /// `key(k)` for each key and `zeros(n)` for n keys equal to 0, in the same order on every call —
    /// and how many keys equal to it the top k take. Each pass histograms the next 16 bits of the
    /// keys that share the bits fixed so far, until at most `collectLimit` candidates remain to
    /// sort; memory is the histogram and those candidates.
    static func kthLargest(_ k: Int, of total: Int, collectLimit: Int,
                           forEachKey: (_ key: (UInt64) -> Void, _ zeros: (Int) -> Void) throws -> Void) throws -> (key: UInt64, ties: Int) {
        precondition(k >= 1 && k <= total)
        var prefix: UInt64 = 0, prefixBits = 0, remaining = k, candidates = total
        while true {
            if prefixBits == 64 { return (prefix, remaining) }
            let matches: (UInt64) -> Bool = { [prefix, prefixBits] key in prefixBits == 0 || key >> UInt64(64 - prefixBits) == prefix }
            if candidates <= collectLimit {
                var keys: [UInt64] = []
                keys.reserveCapacity(candidates)
                try forEachKey({ if matches($0) { keys.append($0) } }, { if matches(0) { keys += repeatElement(0, count: $0) } })
                keys.sort(by: >)
                let key = keys[remaining - 1]
                return (key, remaining - keys.prefix { $0 > key }.count)
            }
            var histogram = [Int](repeating: 0, count: 1 << 16)
            let shift = UInt64(48 - prefixBits)
            try histogram.withUnsafeMutableBufferPointer { h in
                try forEachKey({ if matches($0) { h[Int(($0 >> shift) & 0xFFFF)] += 1 } }, { if matches(0) { h[0] += $0 } })
            }
            var digit = (1 << 16) - 1
            while histogram[digit] < remaining { remaining -= histogram[digit]; digit -= 1 }
            candidates = histogram[digit]
            prefix = prefix << 16 | UInt64(digit)
            prefixBits += 16
        }
    }
}

/// Keeps the top k keys in stream order: every key above the threshold, and the first `ties` keys
/// equal to it (ties go to the earlier position).
struct TopKSelection {
    var thresholdKey: UInt64 = .max
    var ties = 0
    @inline(__always) mutating func keeps(_ key: UInt64) -> Bool {
        if key > thresholdKey { return true }
        if key == thresholdKey && ties > 0 { ties -= 1; return true }
        return false
    }
}
