#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import OneLineText

/// Every failure of this module. The description is one line that names the file, then the
/// object concerned (zip member, pickle offset, tensor or container key), then what was found
/// and what was expected:
///
///     model.bin: archive/data.pkl: refuses global 'os.system' at pickle offset 17: only state dicts of tensors are read; nothing was executed
///     model.bin: tensor 'fc.weight': the view needs elements up to 1024 of storage 'archive/data/3', which holds 512
///     model.bin: zip: central directory offset 9000 + size 300 exceeds the file size 4096
///
/// Names from the file are quoted with `'…'` and control characters are escaped, so a hostile
/// name can neither break the line nor forge another message.
public enum TorchCheckpointError: Error, CustomStringConvertible, Sendable, Equatable {
    /// An operating-system call failed (open, stat, read), with its `errno`.
    case system(path: String, message: String, errno: Int32)
    /// The zip container: end of central directory, central directory, local headers, members.
    /// `member` is nil when the error concerns the archive as a whole.
    case archive(path: String, member: String?, message: String)
    /// The pickle stream in `member` (normally `…/data.pkl`) is malformed or uses something this
    /// reader does not support; `offset` is the byte offset of the opcode in the pickle.
    case pickle(path: String, member: String, offset: Int, message: String)
    /// The pickle names a global that is not on the allow list. Nothing was executed.
    case refusedGlobal(path: String, member: String, offset: Int, module: String, name: String)
    /// A tensor's dtype, shape, strides or storage do not fit together, or the caller misused
    /// `read` for it.
    case tensor(path: String, name: String, message: String)
    /// The pickle holds no unique state dict (or `key` does not lead to one).
    case container(path: String, message: String)
    /// A file this reader recognises but does not read: the legacy pre-1.6 format, TorchScript
    /// archives, big-endian checkpoints, or something that is not a PyTorch checkpoint at all.
    case unsupportedFormat(path: String, message: String)

    public var path: String {
        switch self {
        case .system(let path, _, _), .archive(let path, _, _), .pickle(let path, _, _, _),
            .refusedGlobal(let path, _, _, _, _), .tensor(let path, _, _), .container(let path, _),
            .unsupportedFormat(let path, _):
            return path
        }
    }

    public var description: String {
        let text: String
        switch self {
        case .system(_, let message, _):
            text = message
        case .archive(_, let member, let message):
            text = (member.map { "zip member \(quoted($0)): " } ?? "zip: ") + message
        case .pickle(_, let member, let offset, let message):
            text = "\(quoted(member)): pickle offset \(offset): " + message
        case .refusedGlobal(_, let member, let offset, let module, let name):
            text = "\(quoted(member)): refuses global \(quoted(module + "." + name)) at pickle offset \(offset):"
                + " only state dicts of tensors are read; nothing was executed"
        case .tensor(_, let name, let message):
            text = "tensor \(quoted(name)): " + message
        case .container(_, let message), .unsupportedFormat(_, let message):
            text = message
        }
        return escapingControlCharacters(path) + ": " + escapingControlCharacters(text)
    }
}
