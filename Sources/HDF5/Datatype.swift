import CHDF5

/// An HDF5 datatype (H5T). Owned copies close themselves; predefined types are never closed.
public final class Datatype: @unchecked Sendable {
    public let id: hid_t
    private let owned: Bool

    init(owning id: hid_t) { self.id = id; self.owned = true }
    init(predefined id: hid_t) { self.id = id; self.owned = false }
    deinit { if owned && H5Iis_valid(id) > 0 { H5Tclose(id) } }

    public enum Class: Sendable, Equatable { case integer, float, string, bitfield, enumeration, compound, other(Int32) }

    // Little-endian file types.
    public static var float32LE: Datatype { Datatype(predefined: locus_H5T_IEEE_F32LE()) }
    public static var float64LE: Datatype { Datatype(predefined: locus_H5T_IEEE_F64LE()) }
    public static var int8LE: Datatype { Datatype(predefined: locus_H5T_STD_I8LE()) }
    public static var int16LE: Datatype { Datatype(predefined: locus_H5T_STD_I16LE()) }
    public static var int32LE: Datatype { Datatype(predefined: locus_H5T_STD_I32LE()) }
    public static var int64LE: Datatype { Datatype(predefined: locus_H5T_STD_I64LE()) }
    public static var uint8LE: Datatype { Datatype(predefined: locus_H5T_STD_U8LE()) }
    public static var uint16LE: Datatype { Datatype(predefined: locus_H5T_STD_U16LE()) }
    public static var uint32LE: Datatype { Datatype(predefined: locus_H5T_STD_U32LE()) }
    public static var uint64LE: Datatype { Datatype(predefined: locus_H5T_STD_U64LE()) }
    // Native memory types.
    public static var nativeFloat: Datatype { Datatype(predefined: locus_H5T_NATIVE_FLOAT()) }
    public static var nativeDouble: Datatype { Datatype(predefined: locus_H5T_NATIVE_DOUBLE()) }
    public static var nativeInt64: Datatype { Datatype(predefined: locus_H5T_NATIVE_INT64()) }
    public static var nativeUInt64: Datatype { Datatype(predefined: locus_H5T_NATIVE_UINT64()) }
    public static var nativeUInt32: Datatype { Datatype(predefined: locus_H5T_NATIVE_UINT32()) }
    public static var nativeUInt8: Datatype { Datatype(predefined: locus_H5T_NATIVE_UINT8()) }

    /// A little-endian IEEE-style float of 2 bytes with the given exponent/mantissa widths:
    /// (5, 10, bias 15) is binary16, (8, 7, bias 127) is bfloat16. HDF5 wants the fields set while
    /// the type is still 4 bytes wide, and only then the size reduced.
    public static func float16Like(exponentBits: Int, mantissaBits: Int, bias: Int) throws -> Datatype {
        HDF5Library.silence()
        let t = Datatype(owning: try HDF5Library.check(H5Tcopy(locus_H5T_IEEE_F32LE()), "copy float type"))
        try HDF5Library.check(status: H5Tset_fields(t.id, 15, 15 - exponentBits, exponentBits, 0, mantissaBits), "set float fields")
        try HDF5Library.check(status: H5Tset_size(t.id, 2), "set float size")
        try HDF5Library.check(status: H5Tset_precision(t.id, 16), "set float precision")
        try HDF5Library.check(status: H5Tset_offset(t.id, 0), "set float offset")
        try HDF5Library.check(status: H5Tset_ebias(t.id, bias), "set float exponent bias")
        return t
    }
    public static func float16LE() throws -> Datatype { try float16Like(exponentBits: 5, mantissaBits: 10, bias: 15) }
    public static func bfloat16LE() throws -> Datatype { try float16Like(exponentBits: 8, mantissaBits: 7, bias: 127) }

    /// Variable-length UTF-8 string type (what h5py writes for `str`).
    public static func variableUTF8String() throws -> Datatype {
        HDF5Library.silence()
        let t = Datatype(owning: try HDF5Library.check(H5Tcopy(locus_H5T_C_S1()), "copy string type"))
        try HDF5Library.check(status: H5Tset_size(t.id, locus_H5T_VARIABLE()), "set string size")
        try HDF5Library.check(status: H5Tset_cset(t.id, H5T_CSET_UTF8), "set string charset")
        return t
    }

    public var typeClass: Class {
        switch H5Tget_class(id) {
        case H5T_INTEGER: return .integer
        case H5T_FLOAT: return .float
        case H5T_STRING: return .string
        case H5T_BITFIELD: return .bitfield
        case H5T_ENUM: return .enumeration
        case H5T_COMPOUND: return .compound
        case let c: return .other(c.rawValue)
        }
    }
    public var size: Int { Int(H5Tget_size(id)) }
    public var isLittleEndian: Bool { H5Tget_order(id) == H5T_ORDER_LE }
    public var isSigned: Bool { H5Tget_sign(id) == H5T_SGN_2 }
    public var isVariableString: Bool { H5Tis_variable_str(id) > 0 }
    public var precision: Int { Int(H5Tget_precision(id)) }
    public var offset: Int { Int(H5Tget_offset(id)) }

    /// Bit layout of a float type: (sign position, exponent position, exponent size, mantissa position, mantissa size, bias).
    public struct FloatLayout: Equatable, Sendable {
        public var signPosition, exponentPosition, exponentSize, mantissaPosition, mantissaSize, bias: Int
    }
    public var floatLayout: FloatLayout? {
        guard typeClass == .float else { return nil }
        var spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0
        guard H5Tget_fields(id, &spos, &epos, &esize, &mpos, &msize) >= 0 else { HDF5Library.silence(); _ = HDF5Library.takeErrorStack(); return nil }
        return FloatLayout(signPosition: spos, exponentPosition: epos, exponentSize: esize,
                           mantissaPosition: mpos, mantissaSize: msize, bias: Int(H5Tget_ebias(id)))
    }

    public func isEqual(to other: Datatype) -> Bool { H5Tequal(id, other.id) > 0 }
}
