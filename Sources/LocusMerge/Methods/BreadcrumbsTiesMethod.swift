/// Breadcrumbs-TIES: per-row outlier sparsification composed with TIES's sign election.
extension GTAMethod { static let breadcrumbsTies = GTAMethod("breadcrumbs_ties", GTAComposition(outliers: true, signElection: true),
    summary: "Breadcrumbs' mask (--gamma, --density, --scope) on each w_t τ_t, then TIES's sign election and disjoint mean over the kept entries; θ = θ0 + λ τ_m",
    citation: "Davari, Belilovsky (2024), Model Breadcrumbs, ECCV 2024: the mask; Yadav et al. (2023), TIES-Merging, NeurIPS 2023: elect sign and disjoint merge.") }
