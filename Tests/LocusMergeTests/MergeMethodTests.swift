import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusMerge

/// The merge method registry (docs/merging.md): names and parameter tables, command-line parsing
/// through the tables (canonical names and older spellings), validation, provenance, the generated
/// help table, and that the generalized-task-arithmetic methods are compositions of one kernel.
final class MergeMethodTests: XCTestCase {
    func testNamesAndAliasesAreUniqueAndFoundByName() {
        var seen = Set<String>()
        for m in MergeMethods.all {
            for n in [m.name] + m.aliases {
                XCTAssertTrue(seen.insert(n).inserted, "\(n) names two methods")
                XCTAssertEqual(MergeMethods.named(n)?.name, m.name)
            }
            XCTAssertFalse(m.name.contains("-"), "\(m.name): method names are spelled with _ (recipe, CLI and provenance alike)")
            let names = m.parameters.map(\.name)
            XCTAssertEqual(Set(names).count, names.count, "\(m.name) declares a parameter twice: \(names)")
            let flags = m.parameters.flatMap { [$0.flag] + $0.cliAliases }
            XCTAssertEqual(Set(flags).count, flags.count, "\(m.name): two parameters share a flag: \(flags)")
            XCTAssertNotNil(m.citation.range(of: #"\(\d{4}\)"#, options: .regularExpression), "\(m.name): citation without a year")
            XCTAssertTrue(m.citation.contains(":") || m.citation.contains("§"), "\(m.name): citation without the part of the paper")
        }
        XCTAssertNil(MergeMethods.named("no_such_method"))
    }

    func testHelpTableListsEveryMethodParameterDefaultAndCitation() {
        let help = MergeMethods.helpTable()
        for m in MergeMethods.all {
            XCTAssertTrue(help.contains("  \(m.name)  ("), "\(m.name) missing from the help table")
            for p in m.parameters { XCTAssertTrue(help.contains("--\(p.flag) = \(p.defaultText)") || help.contains("--[no-]\(p.flag) = \(p.defaultText)"), "\(m.name) --\(p.flag)") }
        }
        XCTAssertTrue(help.contains("--density = 0.2, (0, 1]"), "TIES density default and range come from the table")
        XCTAssertTrue(help.contains("--drop-rate = 0.9, [0, 1)"))
        for line in help.split(separator: "\n") { XCTAssertLessThanOrEqual(line.count, 78, "help line too long: \(line)") }
    }

    func testCommandLineParsingUsesTheTableAndItsOlderSpellings() throws {
        var o = MergeOptions()
        o.method = MergeMethods.named("dare_ties")!
        let positional = try MergeMethods.parseCommandLine(
            ["base.h5", "--drop-rate=0.5", "a.h5", "--density", "0.3", "--no-rescale", "--seed", "18446744073709551615",
             "--weights", "1,-0.5", "--ties-scope", "tensor", "b.h5", "--lambda", "-0.25"], into: &o)
        XCTAssertEqual(positional, ["base.h5", "a.h5", "b.h5"])
        XCTAssertEqual(o.dareDropRate, 0.5); XCTAssertEqual(o.tiesDensity, 0.3); XCTAssertFalse(o.dareRescale)
        XCTAssertEqual(o.seed, UInt64.max); XCTAssertEqual(o.weights, [1, -0.5]); XCTAssertEqual(o.tiesScope, .tensor)
        XCTAssertEqual(o.lambda, -0.25)
        XCTAssertTrue(MergeMethods.problems(o, inputCount: 2).isEmpty)

        // Breadcrumbs' density is β (another field than TIES's density), declared by its own table.
        var b = MergeOptions()
        b.method = MergeMethods.named("breadcrumbs")!
        _ = try MergeMethods.parseCommandLine(["--density", "0.4", "--beta=0.5", "--gamma", "0.2", "--scope=tensor"], into: &b)
        XCTAssertEqual(b.breadcrumbsBeta, 0.5); XCTAssertEqual(b.breadcrumbsGamma, 0.2); XCTAssertEqual(b.breadcrumbsScope, .tensor)
        XCTAssertEqual(b.tiesDensity, MergeOptions().tiesDensity, "breadcrumbs' --density does not touch TIES's")
    }

    func testCommandLineErrorsNameTheParameter() {
        func error(_ method: String, _ tokens: [String]) -> String {
            var o = MergeOptions()
            o.method = MergeMethods.named(method)!
            do { _ = try MergeMethods.parseCommandLine(tokens, into: &o); return "" } catch { return error.message }
        }
        let other = error("task_arithmetic", ["--density", "0.3"])
        XCTAssertTrue(other.contains("--density is not a parameter of task_arithmetic") && other.contains("ties"), other)
        XCTAssertTrue(error("ties", ["--density"]).contains("needs a value"))
        XCTAssertTrue(error("ties", ["--density", "lots"]).contains("density must be a finite number"))
        XCTAssertTrue(error("ties", ["--scope", "row"]).contains("global, tensor"))
        XCTAssertTrue(error("consensus", ["--k", "-1"]).contains("integer"))
        XCTAssertTrue(error("dare_linear", ["--rescale=maybe"]).contains("true or false"))
        XCTAssertEqual(error("dare_linear", ["--dare-rescale=false"]), "")
    }

    func testRangesAreCheckedWhereverTheOptionsComeFrom() {
        var o = MergeOptions()
        o.method = MergeMethods.named("ties")!
        o.tiesDensity = 0
        XCTAssertEqual(MergeMethods.problems(o, inputCount: 2), ["ties: density must be in (0, 1] (--density)"])
        o.method = MergeMethods.named("breadcrumbs")!
        o.breadcrumbsBeta = 0.8; o.breadcrumbsGamma = 0.3
        XCTAssertEqual(MergeMethods.problems(o, inputCount: 2).count, 1, "β + γ > 1")
        o = MergeOptions(); o.method = MergeMethods.named("tall")!
        XCTAssertTrue(MergeMethods.problems(o, inputCount: 2).joined().contains("--tall-dir"))
        o = MergeOptions(); o.method = MergeMethods.named("fisher")!; o.fisherScores = ["a.h5"]
        XCTAssertTrue(MergeMethods.problems(o, inputCount: 2).joined().contains("one scores file per task vector (1 for 2)"))
    }

    func testProvenanceRecordsTheMethodAndExactlyItsParameters() {
        var o = MergeOptions()
        o.method = MergeMethods.named("task-arithmetic")!
        o.weights = [1, 2]
        let p = MergeMethods.provenance(o)
        XCTAssertEqual(p["method"], .string("task_arithmetic"), "the canonical name, not the alias")
        XCTAssertEqual(Set(p.keys), ["method", "lambda", "weight"])
        o.method = MergeMethods.named("dare_ties")!
        XCTAssertEqual(Set(MergeMethods.provenance(o).keys), ["method", "lambda", "weight", "drop_rate", "rescale", "seed", "density", "scope"])
    }

    func testTaskArithmeticFamilyIsOneKernelWithDifferentCompositions() {
        let family: [(String, GTAComposition)] = [
            ("task_arithmetic", GTAComposition()),
            ("ties", GTAComposition(magnitude: true, signElection: true)),
            ("dare_linear", GTAComposition(random: true)),
            ("dare_ties", GTAComposition(random: true, magnitude: true, signElection: true)),
            ("breadcrumbs", GTAComposition(outliers: true)),
            ("breadcrumbs_ties", GTAComposition(outliers: true, signElection: true)),
        ]
        for (name, want) in family {
            let m = MergeMethods.named(name)!
            guard let k = m.producer.directionKernel as? GTAKernel else { return XCTFail("\(name) is not generalized task arithmetic") }
            XCTAssertEqual([k.composition.random, k.composition.magnitude, k.composition.outliers, k.composition.signElection],
                           [want.random, want.magnitude, want.outliers, want.signElection], name)
        }
        XCTAssertNil(MergeMethods.named("fisher")!.producer.directionKernel, "Fisher's output is not θ0 + λ·d (no α search)")
    }

    func testSlerpCoefficients() {
        // Orthogonal unit vectors: the quarter circle, cos(tπ/2) and sin(tπ/2).
        for t in [0.0, 0.2, 0.5, 1.0] {
            let (a, b) = SlerpKernel.coefficients(t: t, normSquared0: 1, normSquared1: 1, dot: 0)
            XCTAssertEqual(a, cos(t * .pi / 2), accuracy: 1e-15); XCTAssertEqual(b, sin(t * .pi / 2), accuracy: 1e-15)
        }
        // The norms do not change the angle: ‖v0‖ = 2, ‖v1‖ = 3, 60° apart.
        let (a, b) = SlerpKernel.coefficients(t: 0.5, normSquared0: 4, normSquared1: 9, dot: 6 * 0.5)
        XCTAssertEqual(a, sin(Double.pi / 6) / sin(Double.pi / 3), accuracy: 1e-12); XCTAssertEqual(b, a, accuracy: 1e-12)
        // Nearly parallel or opposite (|cos Ω| > 0.9995): the linear weights.
        XCTAssertTrue(SlerpKernel.coefficients(t: 0.3, normSquared0: 1, normSquared1: 1, dot: 0.9996) == (0.7, 0.3))
        XCTAssertTrue(SlerpKernel.coefficients(t: 0.3, normSquared0: 1, normSquared1: 4, dot: -2) == (0.7, 0.3))
        XCTAssertFalse(SlerpKernel.coefficients(t: 0.3, normSquared0: 1, normSquared1: 1, dot: 0.9994) == (0.7, 0.3))
        // A zero tensor is not divided by its norm: cos Ω = 0.
        let z = SlerpKernel.coefficients(t: 0.5, normSquared0: 0, normSquared1: 1, dot: 0)
        XCTAssertEqual(z.0, 0.5.squareRoot(), accuracy: 1e-15)
    }
}
