/// The one seeded generator (`SplitMix64`) is LocusRandom's; re-exported so that code importing
/// only the engine draws from the same one.
@_exported import LocusRandom
