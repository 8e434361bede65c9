import Foundation
import LocusFormat

/// Writes NumPy's .npy format (version 1.0, little-endian float32, C order): the smallest file
/// numpy, torch and every notebook read without Locus.
public enum NumPy {
    public static func write(_ values: [Float], shape: [Int], to path: String) throws {
        precondition(shape.reduce(1, *) == values.count)
        let dims = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(dims), }"
        // magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let n = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(n & 0xFF), UInt8(n >> 8)])
        data.append(contentsOf: Array(header.utf8))
        values.withUnsafeBytes { data.append(contentsOf: $0) }   // x86-64 and arm64 are little-endian
        guard FileManager.default.createFile(atPath: path, contents: data) else {
            throw LocusError(file: path, "cannot write the .npy file")
        }
    }
}

extension NumPy {
    /// Reads a float matrix from a .npy file (versions 1–3, little-endian float16/32/64, C order),
    /// checking the header against the file's length before touching the data.
    public static func readMatrix(_ path: String) throws -> (rows: Int, columns: Int, values: [Float]) {
        guard let data = FileManager.default.contents(atPath: path) else { throw LocusError(file: path, "cannot read the .npy file") }
        let bytes = [UInt8](data)
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else {
            throw LocusError(file: path, "is not a .npy file (no \\x93NUMPY magic)")
        }
        let major = bytes[6]
        let headerLength: Int, start: Int
        switch major {
        case 1: headerLength = Int(bytes[8]) | Int(bytes[9]) << 8; start = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw LocusError(file: path, "the .npy header is truncated") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }; start = 12
        default: throw LocusError(file: path, ".npy version \(major) is not supported (1, 2 or 3)")
        }
        guard headerLength <= bytes.count - start else { throw LocusError(file: path, "the .npy header (\(headerLength) bytes) runs past the end of the file") }
        let header = String(decoding: bytes[start..<(start + headerLength)], as: UTF8.self)
        func field(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descrField = field("descr"), let q = descrField.dropFirst().firstIndex(of: "'"), descrField.first == "'" else {
            throw LocusError(file: path, "the .npy header has no 'descr'")
        }
        let descr = String(descrField[descrField.index(after: descrField.startIndex)..<q])
        let itemSize: Int
        switch descr {
        case "<f2": itemSize = 2
        case "<f4": itemSize = 4
        case "<f8": itemSize = 8
        default: throw LocusError(file: path, "has dtype '\(descr)'; expected little-endian float16, float32 or float64 ('<f2', '<f4', '<f8')")
        }
        guard let order = field("fortran_order"), order.hasPrefix("False") else {
            throw LocusError(file: path, "is stored in Fortran order; save it with numpy.ascontiguousarray first")
        }
        guard let shapeField = field("shape"), shapeField.first == "(", let close = shapeField.firstIndex(of: ")") else {
            throw LocusError(file: path, "the .npy header has no 'shape'")
        }
        let dims = shapeField[shapeField.index(after: shapeField.startIndex)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let shape = dims.compactMap { Int($0) }
        guard shape.count == dims.count, shape.count == 2, shape.allSatisfy({ $0 >= 1 && $0 <= 1 << 31 }) else {
            throw LocusError(file: path, "has shape (\(dims.joined(separator: ", "))); expected a matrix [classes, embedding width]")
        }
        let (count, overflow) = shape[0].multipliedReportingOverflow(by: shape[1])
        let payload = bytes.count - start - headerLength
        guard !overflow, count <= payload / itemSize, count * itemSize == payload else {
            throw LocusError(file: path, "holds \(payload) data bytes; shape (\(shape[0]), \(shape[1])) of \(descr) needs \(overflow ? "more" : String(count * itemSize))")
        }
        let base = start + headerLength
        var values = [Float](repeating: 0, count: count)
        for i in 0..<count {
            var bits: UInt64 = 0
            for k in 0..<itemSize { bits |= UInt64(bytes[base + i * itemSize + k]) << (8 * UInt64(k)) }
            switch itemSize {
            case 2: values[i] = Float(Float16(bitPattern: UInt16(bits)))
            case 4: values[i] = Float(bitPattern: UInt32(bits))
            default: values[i] = Float(Double(bitPattern: bits))
            }
        }
        guard values.allSatisfy(\.isFinite) else { throw LocusError(file: path, "holds non-finite values") }
        return (shape[0], shape[1], values)
    }
}
