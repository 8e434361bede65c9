// swift-tools-version:6.0
import PackageDescription

// Layering, bottom to top:
//   LocusRandom (the one seeded generator, SplitMix64; re-exported by LocusFormat)
//   CHDF5 (C shim over libhdf5)  →  HDF5 (safe wrapper, knows nothing of Locus)
//   SafeTensors (strict reader/writer, knows nothing of Locus)
//   CZlib → TorchCheckpoint (strict torch.save reader, restricted unpickler, knows nothing of Locus)
//   LocusFormat (the Locus layout: kinds, rules, validation, conversion)
//   CZlib → LocusData (IDX / CSV(.gz) import, splits, task derivation → dataset artifacts)
//   CBLAS (OpenBLAS loaded at run time) → LocusKernels (thread pool, SIMD kernels) → LocusEngine (tensors, layers, models, training, scoring, masks)
//   LocusMerge (task-vector arithmetic on files: diff, apply, merge)
//   locus (thin command-line front end)
let package = Package(
    name: "Locus",
    products: [
        .executable(name: "locus", targets: ["locus"]),
        .library(name: "LocusFormat", targets: ["LocusFormat"]),
        .library(name: "HDF5", targets: ["HDF5"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "TorchCheckpoint", targets: ["TorchCheckpoint"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // SHA-256 for base fingerprints (BoringSSL-backed on Linux: hashing a checkpoint must not be the bottleneck).
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // YAML merge recipes (`locus merge --config`), mergekit's format.
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5", providers: [.apt(["libhdf5-dev"])]),
        .target(name: "HDF5", dependencies: ["CHDF5"]),
        .target(name: "SafeTensors"),
        .target(name: "LocusRandom"),
        // Strict reader of torch.save checkpoints (restricted unpickler; knows nothing of Locus).
        .target(name: "TorchCheckpoint", dependencies: ["CZlib"]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "LocusData", dependencies: ["LocusFormat", "CZlib"]),
        .target(name: "CBLAS", linkerSettings: [.linkedLibrary("dl")]),
        // The engine's thread pool, product splitting and SIMD kernels (docs/engine-kernels.md).
        .target(name: "LocusKernels", dependencies: ["CBLAS"]),
        .target(name: "LocusEngine", dependencies: ["LocusFormat", "CBLAS", "LocusKernels"]),
        .target(name: "LocusMerge", dependencies: ["LocusFormat"]),
        .target(name: "LocusFormat", dependencies: [
            "HDF5", "SafeTensors", "TorchCheckpoint", "LocusRandom",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .executableTarget(name: "locus", dependencies: [
            "LocusFormat", "LocusData", "LocusEngine", "LocusMerge",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Yams", package: "Yams"),
        ]),
        // Benchmarks that need the engine's internals; the scripts around them live in bench/.
        .executableTarget(name: "locus-bench", dependencies: ["LocusEngine"], path: "bench/swift"),
        .executableTarget(name: "torch-checkpoint-bench", dependencies: ["TorchCheckpoint"], path: "bench/torch-checkpoint"),
        .testTarget(name: "LocusRandomTests", dependencies: ["LocusRandom"]),
        .testTarget(name: "HDF5Tests", dependencies: ["HDF5", "LocusRandom"]),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors", "LocusRandom"]),
        .testTarget(name: "TorchCheckpointTests", dependencies: ["TorchCheckpoint", "LocusRandom"]),
        .testTarget(name: "LocusFormatTests", dependencies: ["LocusFormat", "HDF5", "SafeTensors"]),
        .testTarget(name: "LocusDataTests", dependencies: ["LocusData", "LocusFormat"]),
        .testTarget(name: "LocusEngineTests", dependencies: ["LocusEngine", "LocusFormat"]),
        .testTarget(name: "LocusMergeTests", dependencies: ["LocusMerge", "LocusFormat"]),
    ]
)
