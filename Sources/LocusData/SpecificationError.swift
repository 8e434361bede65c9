/// A specification given as text that is not one — a split such as `0.8,0.1,0.1` or a transform
/// such as `resize=28,28`: `text` is what was given, `reason` what is wrong with it. Says nothing
/// about where the text came from; a command line names its option, a recipe its key.
public struct SpecificationError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Subject: Sendable, Equatable { case split, transform }
    public var subject: Subject
    public var text: String
    public var reason: String
    public init(_ subject: Subject, text: String, reason: String) { self.subject = subject; self.text = text; self.reason = reason }
    public var description: String { "'\(text)': \(reason)" }
}
