@_exported import LocusRandom

/// The engine's former name of the shared generator; use `SplitMix64` (LocusRandom).
@available(*, deprecated, renamed: "SplitMix64")
public typealias SeededRandom = SplitMix64
