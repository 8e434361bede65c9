/// Model Breadcrumbs: per-row outlier sparsification, then the weighted sum.
extension GTAMethod { static let breadcrumbs = GTAMethod("breadcrumbs", GTAComposition(outliers: true),
    summary: "per row (paper; --scope tensor: mergekit) drop the top --gamma of |τ| and keep the next --density (β), then θ = θ0 + λ Σ_t w_t τ̃_t",
    citation: "Davari, Belilovsky (2024), Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks, ECCV 2024: the mask that drops outliers and small values.") }
