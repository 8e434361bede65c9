/// The seeded generator (`SplitMix64`) lives in LocusRandom, below every module that draws random
/// numbers; re-exported here so that LocusData, LocusEngine and LocusMerge use the same one.
@_exported import LocusRandom
