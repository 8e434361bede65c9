/// DELLA: magnitude-ranked random drop (MagPrune), then TIES's sign election and disjoint merge.
struct DellaMethod: GeneralizedTaskArithmeticMethod {
    let name = "della"
    let summary = [
        "per row (1-D: the tensor; mergekit ranks a 3-D or larger tensor along its second axis) rank τ_t's",
        "entries by |τ| ascending, equal ones by position; keep rank r of n with probability",
        "p = density − ε + 2ε·r/(n−1), divide kept ones by p (--no-rescale: not; mergekit 0.1.5 rescales",
        "to the tensor's L1 norm instead); seeded by --seed; then elect the sign of Σ_t w_t τ̃_t and take",
        "the mean of the agreeing entries (mergekit divides by the sum of their weights); θ = θ0 + λ τ_m",
    ]
    let citation = "Deep, Bhardwaj, Poria (2024), DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based Sampling, arXiv:2406.11617, §3: Drop (MagPrune), Elect, Fuse."
    let composition = GTAComposition(signElection: true, magPrune: true)
}
