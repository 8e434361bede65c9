import ArgumentParser
import Foundation
import LocusFormat

extension RenameTable: ExpressibleByArgument {}
extension CheckpointOutputFormat: ExpressibleByArgument {}

/// `--verify`: check every Locus artifact a command reads against its stored digests and
/// fingerprint before using its values (docs/reliability.md). Shared by every command that reads.
struct VerifyOptions: ParsableArguments {
    @Flag(help: "Check each Locus file read against its stored digests first.")
    var verify = false

    /// Runs `body` with verification on or off for every artifact it opens; notes go to stderr.
    func scoped<R>(_ body: () throws -> R) throws -> R {
        let v = ReadVerification(enabled: verify) { StandardStream.error.write("locus: note: \($0)\n") }
        return try ReadVerification.$current.withValue(v) { try body() }
    }
}

/// How a checkpoint is opened: a key inside PyTorch files and a renaming (docs/checkpoints.md).
struct OpeningOptions: ParsableArguments {
    @Option(help: ArgumentHelp("PyTorch files: dotted key of the state dict.", valueName: "key")) var key: String?
    @Option(help: ArgumentHelp("Built-in renaming table.", valueName: "table")) var rename: RenameTable?
    @Option(help: ArgumentHelp("Keep only tensors named <prefix>…, minus the prefix.", valueName: "prefix")) var stripPrefix: String?
    @Option(help: ArgumentHelp("'REGEX → REPLACEMENT' lines, first match wins.", valueName: "file")) var renameRules: String?

    func openOptions() throws -> CheckpointOpenOptions {
        let rules = try renameRules.map { try RenameRule.parse(file: $0) } ?? []
        let renaming = TensorRenaming(stripPrefix: stripPrefix, table: rename, rules: rules)
        return CheckpointOpenOptions(key: key, renaming: renaming.isIdentity ? nil : renaming)
    }

    /// Provenance parameters recording the renaming (spec §1.2, key `source-renaming`).
    func parameters() throws -> [String: JSONValue] {
        var p: [String: JSONValue] = [:]
        if let r = try openOptions().renaming { p["source-renaming"] = r.provenanceValue }
        if let key { p["source-key"] = .string(key) }
        return p
    }

    /// Runs `body` with these options applying to every checkpoint it opens.
    func scoped<R>(_ body: () throws -> R) throws -> R {
        try CheckpointOpenOptions.$current.withValue(try openOptions()) { try body() }
    }
}

/// How every checkpoint a command reads is opened, and whether it is verified first. Shared by
/// all commands that read models.
struct SourceOptions: ParsableArguments {
    @OptionGroup var opening: OpeningOptions
    @OptionGroup var verification: VerifyOptions
    var verify: Bool { verification.verify }

    func openOptions() throws -> CheckpointOpenOptions { try opening.openOptions() }
    func parameters() throws -> [String: JSONValue] { try opening.parameters() }

    /// Runs `body` with these options applying to every checkpoint it opens.
    func scoped<R>(_ body: () throws -> R) throws -> R {
        try verification.scoped { try opening.scoped(body) }
    }
}

/// Where a checkpoint output goes: `.h5` or a Hugging Face folder, and the folder's shard size.
struct OutputOptions: ParsableArguments {
    @Option(help: ArgumentHelp("h5, or hf for a Hugging Face folder (default: hf when OUTPUT ends in / or is a folder).", valueName: "fmt"))
    var format: CheckpointOutputFormat?
    @Option(help: ArgumentHelp("Largest shard of a folder, e.g. 200MB.", valueName: "size"))
    var shardSize: String = "5GB"

    func validate() throws { _ = try shardBytes() }
    func format(for output: String) -> CheckpointOutputFormat { CheckpointOutputFormat.infer(path: output, explicit: format) }
    func shardBytes() throws -> Int { try parseByteSize(shardSize) }
}

/// "5GB" (10⁹), "512MiB" (2²⁰), "200KB", "1000" (bytes) — the units transformers accepts.
func parseByteSize(_ text: String) throws -> Int {
    let t = text.trimmingCharacters(in: .whitespaces)
    let units: [(String, Double)] = [("GIB", 1_073_741_824), ("MIB", 1_048_576), ("KIB", 1024), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1)]
    let upper = t.uppercased()
    for (u, f) in units where upper.hasSuffix(u) {
        if let v = Double(upper.dropLast(u.count).trimmingCharacters(in: .whitespaces)), v > 0, v * f < 9e18 { return Int(v * f) }
        throw ValidationError("--shard-size: expected a positive size like 5GB or 512MiB, got '\(text)'")
    }
    guard let v = Int(t), v > 0 else { throw ValidationError("--shard-size: expected a positive size like 5GB or 512MiB, got '\(text)'") }
    return v
}
