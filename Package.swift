// swift-tools-version:6.0
import PackageDescription

// Layering, bottom to top:
//   LocusRandom (the one seeded generator, SplitMix64; re-exported by LocusFormat)
//   CHDF5 (C shim over libhdf5)  →  HDF5 (safe wrapper, knows nothing of Locus)
//   SafeTensors (strict reader/writer, knows nothing of Locus)
//   CZlib → TorchCheckpoint (strict torch.save reader, restricted unpickler, knows nothing of Locus)
//   CDeflate → LocusFormat (the Locus layout: kinds, rules, validation, conversion; libdeflate inflates mask chunks)
//   CZlib → LocusData (IDX / CSV(.gz) import, splits, task derivation → dataset artifacts)
//   CBLAS (OpenBLAS loaded at run time) → LocusKernels (thread pool, SIMD kernels) → LocusEngine (tensors, layers, models, training, scoring, masks)
//   LocusMerge (task-vector arithmetic on files: diff, apply, merge)
//   LocusRender (text tables and SVG plots of reports: inspect, compare)
//   LocusWorkflows (what the commands do: train/finetune/eval/score/mask runs, α searches, negation)
//   locus (thin command-line front end: options, validation, one call, one error report)
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
        // Quoting and escaping for one-line error messages (the strict readers share it).
        .target(name: "OneLineText"),
        .target(name: "SafeTensors", dependencies: ["OneLineText"]),
        .target(name: "LocusRandom"),
        // Strict reader of torch.save checkpoints (restricted unpickler; knows nothing of Locus).
        .target(name: "TorchCheckpoint", dependencies: ["CZlib", "OneLineText"]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CDeflate", pkgConfig: "libdeflate", providers: [.apt(["libdeflate-dev"])]),
        .target(name: "LocusData", dependencies: ["LocusFormat", "CZlib"]),
        .target(name: "CBLAS", linkerSettings: [.linkedLibrary("dl")]),
        // The engine's thread pool, product splitting and SIMD kernels (docs/engine-kernels.md).
        .target(name: "LocusKernels", dependencies: ["CBLAS"]),
        .target(name: "LocusEngine", dependencies: ["LocusFormat", "CBLAS", "LocusKernels"]),
        .target(name: "LocusMerge", dependencies: ["LocusFormat", .product(name: "Yams", package: "Yams")]),
        .target(name: "LocusRender", dependencies: ["LocusFormat", "LocusMerge"]),
        .target(name: "LocusFormat", dependencies: [
            "HDF5", "SafeTensors", "TorchCheckpoint", "LocusRandom", "CDeflate",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "LocusWorkflows", dependencies: ["LocusFormat", "LocusData", "LocusEngine", "LocusMerge", "LocusRender"]),
        .executableTarget(name: "locus", dependencies: [
            "LocusFormat", "LocusData", "LocusEngine", "LocusMerge", "LocusRender", "LocusWorkflows",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Yams", package: "Yams"),
        ]),
        // Benchmarks that need the engine's internals; the scripts around them live in bench/.
        .executableTarget(name: "locus-bench", dependencies: ["LocusEngine"], path: "bench/swift"),
        .executableTarget(name: "torch-checkpoint-bench", dependencies: ["TorchCheckpoint"], path: "bench/torch-checkpoint"),
        // Helpers the test targets share (scratch directories, error expectations, test data).
        .target(name: "LocusTestSupport", dependencies: ["LocusRandom"], path: "Tests/LocusTestSupport"),
        .testTarget(name: "LocusRandomTests", dependencies: ["LocusRandom"]),
        .testTarget(name: "HDF5Tests", dependencies: ["LocusTestSupport", "HDF5", "LocusRandom"]),
        .testTarget(name: "SafeTensorsTests", dependencies: ["LocusTestSupport", "SafeTensors", "LocusRandom"]),
        .testTarget(name: "TorchCheckpointTests", dependencies: ["LocusTestSupport", "TorchCheckpoint", "LocusRandom"]),
        .testTarget(name: "LocusFormatTests", dependencies: ["LocusTestSupport", "LocusFormat", "LocusRender", "HDF5", "SafeTensors"]),
        .testTarget(name: "LocusDataTests", dependencies: ["LocusTestSupport", "LocusData", "LocusFormat"]),
        .testTarget(name: "LocusEngineTests", dependencies: ["LocusTestSupport", "LocusEngine", "LocusFormat"]),
        .testTarget(name: "LocusMergeTests", dependencies: ["LocusTestSupport", "LocusMerge", "LocusFormat"]),
        .testTarget(name: "LocusRenderTests", dependencies: ["LocusTestSupport", "LocusRender", "LocusFormat", "HDF5"]),
        .testTarget(name: "LocusWorkflowsTests", dependencies: ["LocusTestSupport", "LocusWorkflows", "LocusEngine", "LocusMerge", "LocusFormat", "LocusData"]),
    ]
)
