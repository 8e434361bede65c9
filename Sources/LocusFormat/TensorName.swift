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
        return String(decoding: percentDecode(link), as: UTF8.self)
    }

    /// Whether a link name percent-decodes to valid UTF-8 (spec §1.3).
    public static func decodesToValidUTF8(_ link: String) -> Bool {
        guard link.contains("%") else { return true }
        return String(validating: percentDecode(link), as: UTF8.self) != nil
    }

    private static func percentDecode(_ link: String) -> [UInt8] {
        var bytes: [UInt8] = []
        let u = Array(link.utf8)
        var i = 0
        while i < u.count {
            if u[i] == UInt8(ascii: "%"), i + 2 < u.count, let h = hex(u[i + 1]), let l = hex(u[i + 2]) {
                bytes.append(h << 4 | l); i += 3
            } else { bytes.append(u[i]); i += 1 }
        }
        return bytes
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Names are compared as UTF-8 bytes: Swift's `==` treats canonically equivalent strings
    /// (precomposed and decomposed accents) as equal, but they are different state-dict keys.
    public static func key(_ name: String) -> [UInt8] { Array(name.utf8) }
    public static func same(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }

    /// Why `name` cannot be a Locus tensor name (spec §1.3), or nil if it can.
    public static func problem(with name: String) -> String? {
        if name.isEmpty { return "empty tensor name" }
        if name.utf8.contains(0) { return "tensor name contains a NUL byte" }
        if name.utf8.contains(10) { return "tensor name contains a newline" }
        return nil
    }

    /// The order the fingerprint and Locus writers use: ascending bytes of the UTF-8 name.
    public static func byteOrder(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
}
