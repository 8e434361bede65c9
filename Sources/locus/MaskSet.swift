import ArgumentParser
import LocusFormat
import LocusMerge
import LocusWorkflows

struct MaskSetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mask-set",
        abstract: "Union, intersection or difference of masks of one base, as a new mask.",
        discussion: """
        Entry by entry: union selects what any mask selects, intersection what every mask \
        selects, difference what the first selects and none of the others. A tensor missing \
        from a mask counts as that mask's absent-tensor rule. The output keeps the masks' base \
        fingerprint, so it fine-tunes and merges with them; its provenance lists each input \
        mask's fingerprint. `locus compare` shows how masks overlap before you combine them.

        Examples:
          locus mask-set union mask-a.h5 mask-b.h5 -o both.h5
          locus mask-set difference mask-a.h5 mask-b.h5 -o only-a.h5
        """)

    @Argument(help: ArgumentHelp("union, intersection or difference.", valueName: "operation"))
    var operation: MaskOperations.SetOperation
    @Argument(help: "Two or more masks of one base model.") var masks: [String]
    @Option(name: .shortAndLong, help: "Output mask file.") var output: String
    @OptionGroup var verification: VerifyOptions

    func validate() throws {
        guard masks.count >= 2 else { throw ValidationError("give two or more masks to combine") }
    }

    func run() throws {
        try verification.scoped {
            try OutputSafety.check(outputs: [.init("output", output)], inputs: masks.enumerated().map { .init("mask \($0.offset + 1)", $0.element) })
            let s = try MaskOperations.combine(operation, inputs: masks, output: output,
                                               provenance: provenance(inputs: [], parameters: [:]))
            print("\(output): \(s.ones) of \(s.count) entries selected (\(fmt(s.density * 100, 3)) %), \(s.tensors) tensors")
        }
    }
}

extension MaskOperations.SetOperation: ExpressibleByArgument {}
