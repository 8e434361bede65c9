// Errors about settings rather than files, thrown by every library and worded by the front end:
// the command line maps each setting to its flag (Sources/locus/ErrorReport.swift), so no library
// message names a command-line flag.

/// A request whose settings do not fit together or do not fit the files they name — e.g. three
/// heads named for two task vectors. `setting` is the request's field (`heads`, `grid`, …); a
/// front end says which of its options that is (the command line maps it to a flag). Input files
/// that are wrong are `LocusError`s instead, naming the file and the object.
public struct RequestError: Error, Sendable, CustomStringConvertible {
    public var setting: String
    public var message: String
    public init(_ setting: String, _ message: String) { self.setting = setting; self.message = message }
    public var description: String { "\(setting): \(message)" }
}

/// A problem with an input file that a setting of the request would resolve: the file, object and
/// what was expected (`error`), and which setting to change (`remedy`). A front end turns the
/// remedy into its own words (the command line: the flag to give or leave out).
public struct RemediableError: Error, Sendable, CustomStringConvertible {
    public enum Remedy: Sendable, Equatable {
        /// Turn `setting` on to `purpose` (e.g. addHead, "create it").
        case use(setting: String, purpose: String)
        /// Turn `setting` off.
        case leaveOut(setting: String)
        /// Say which one with `setting` (e.g. heads).
        case name(setting: String)
    }
    public var error: LocusError
    public var remedy: Remedy
    public init(_ error: LocusError, _ remedy: Remedy) { self.error = error; self.remedy = remedy }
    public var description: String { error.description }
}
