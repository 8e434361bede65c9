/// Tensor names ⇄ HDF5 link names (spec §1.3): `%` → `%25`, `/` → `%2F`, a lone `.` → `%2E`.
public enum TensorName {
    public static func linkName(for name: String) -> String {
        if name == "." { return "%2E" }
        guard name.contains("%") || name.contains("/") else { return name }
        var out = ""
        for ch in name {
            switch ch {
            case "%": out += "%25"
            case "/": out += "%2F"
            default: out.append(ch)
            }
        }
        return out
    }

    /// Percent-decodes a link name (like Python's `urllib.parse.unquote`: malformed escapes stay as they are).
    public static func name(forLink link: String) -> String {
        guard link.contains("%") else { return link }
        var bytes: [UInt8] = []
        let u = Array(link.utf8)
        var i = 0
        while i < u.count {
            if u[i] == UInt8(ascii: "%"), i + 2 < u.count, let h = hex(u[i + 1]), let l = hex(u[i + 2]) {
                bytes.append(h << 4 | l); i += 3
            } else { bytes.append(u[i]); i += 1 }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The order the fingerprint and Locus writers use: ascending bytes of the UTF-8 name.
    public static func byteOrder(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
}
