/// Which end of the score distribution becomes trainable (1 in the mask).
public enum KeepRule: String, Sendable, CaseIterable, Codable {
    /// TaLoS: the least sensitive parameters are fine-tuned.
    case lowest
    /// Pruning-style: the most important parameters are kept.
    case highest
}

public enum MaskScope: String, Sendable, CaseIterable, Codable {
    /// One threshold over every scored tensor (TaLoS `global_copy`).
    case global
    /// A threshold per tensor, each keeping the same fraction.
    case local
}

/// Selecting exactly k entries by score, deterministically.
///
/// Tie rule: among entries with equal scores, the one with the smaller position wins, where the
/// position runs over tensors in the given order and, within a tensor, in C order. So exactly
/// k = ⌊density · n⌋ entries are selected (n = entries still eligible in scope) and the result
/// does not depend on sort stability or thread count.
public enum Selection {
    /// `eligible[t][i]` false means the entry is out (never selected). Returns the selected entries.
    public static func select(scores: [[Float]], eligible: [[Bool]]?, count k: Int, keep: KeepRule) -> [[Bool]] {
        // Orient so that "smaller is better".
        let key: (Float) -> Float = keep == .lowest ? { $0 } : { -$0 }
        var candidates: [Float] = []
        for (t, s) in scores.enumerated() {
            for i in 0..<s.count where eligible?[t][i] ?? true { candidates.append(key(s[i])) }
        }
        var out = scores.map { [Bool](repeating: false, count: $0.count) }
        guard k > 0, !candidates.isEmpty else { return out }
        let take = min(k, candidates.count)
        candidates.sort()
        let threshold = candidates[take - 1]
        var below = 0
        for v in candidates { if v < threshold { below += 1 } else { break } }
        var tiesLeft = take - below
        for (t, s) in scores.enumerated() {
            for i in 0..<s.count where eligible?[t][i] ?? true {
                let v = key(s[i])
                if v < threshold { out[t][i] = true }
                else if v == threshold && tiesLeft > 0 { out[t][i] = true; tiesLeft -= 1 }
            }
        }
        return out
    }

    /// Selects ⌊density · n⌋ entries globally or per tensor.
    public static func select(scores: [[Float]], eligible: [[Bool]]?, density: Double, keep: KeepRule, scope: MaskScope) -> [[Bool]] {
        switch scope {
        case .global:
            let n = eligible.map { $0.reduce(0) { $0 + $1.filter { $0 }.count } } ?? scores.reduce(0) { $0 + $1.count }
            let total = scores.reduce(0) { $0 + $1.count }
            // The target is a fraction of all entries (TaLoS: int(density · total)), never more than are eligible.
            return select(scores: scores, eligible: eligible, count: min(n, Int(density * Double(total))), keep: keep)
        case .local:
            return scores.indices.map { t in
                let k = Int(density * Double(scores[t].count))
                return select(scores: [scores[t]], eligible: eligible.map { [$0[t]] }, count: k, keep: keep)[0]
            }
        }
    }

    /// Uniformly random selection of ⌊density · n⌋ entries (globally or per tensor), seeded.
    public static func random(shapes counts: [Int], density: Double, scope: MaskScope, seed: UInt64) -> [[Bool]] {
        var rng = SplitMix64(seed: seed)
        switch scope {
        case .global:
            let total = counts.reduce(0, +)
            let flat = select(scores: [(0..<total).map { _ in rng.unitFloat() }], eligible: nil, count: Int(density * Double(total)), keep: .lowest)[0]
            var out: [[Bool]] = [], start = 0
            for c in counts { out.append(Array(flat[start..<(start + c)])); start += c }
            return out
        case .local:
            return counts.map { c in select(scores: [(0..<c).map { _ in rng.unitFloat() }], eligible: nil, count: Int(density * Double(c)), keep: .lowest)[0] }
        }
    }
}

/// TaLoS mask calibration (Iurada et al., 2025; docs/talos.md §Mask calibration): R rounds with target densities d^(r/R); every round
/// re-scores the whole scoring set with the entries dropped so far multiplied by `dropScale`
/// (0.1) in the forward pass and excluded from selection, so they never come back.
public enum Calibration {
    public struct Options: Sendable {
        public var density: Double
        public var rounds = 4
        public var keep: KeepRule = .lowest
        public var scope: MaskScope = .global
        public var dropScale: Float = 0.1
        public init(density: Double) { self.density = density }
    }

    public struct Round: Sendable {
        public var round: Int
        public var targetDensity: Double
        public var ones: Int
        public var total: Int
    }

    /// `score` runs one full scoring pass over the data and returns the sums per parameter.
    public static func run(parameters: [Parameter], options: Options,
                           score: () throws -> [[Float]], progress: ((Round) -> Void)? = nil) throws -> (mask: [[Bool]], lastScores: [[Float]]) {
        guard options.density > 0, options.density <= 1 else { throw EngineError("density must be in (0, 1], got \(options.density)") }
        guard options.rounds >= 1 else { throw EngineError("rounds must be ≥ 1") }
        let total = parameters.reduce(0) { $0 + $1.value.count }
        var alive: [[Bool]]? = nil
        var lastScores: [[Float]] = []
        defer { parameters.forEach { $0.forwardScale = nil } }
        for r in 1...options.rounds {
            let target = pow(options.density, Double(r) / Double(options.rounds))
            lastScores = try score()
            for (t, s) in lastScores.enumerated() where s.contains(where: { !$0.isFinite }) {
                throw EngineError("\(parameters[t].name): scores are not finite in round \(r)")
            }
            let selected = Selection.select(scores: lastScores, eligible: alive, density: target, keep: options.keep, scope: options.scope)
            alive = selected
            for (p, m) in zip(parameters, selected) {
                p.forwardScale = r < options.rounds ? m.map { $0 ? 1 : options.dropScale } : nil
            }
            progress?(Round(round: r, targetDensity: target, ones: selected.reduce(0) { $0 + $1.filter { $0 }.count }, total: total))
        }
        return (alive ?? [], lastScores)
    }
}

import Foundation
