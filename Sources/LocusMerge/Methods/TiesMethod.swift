/// TIES-Merging: magnitude sparsification composed with sign election.
extension GTAMethod { static let ties = GTAMethod("ties", GTAComposition(magnitude: true, signElection: true),
    summary: "trim each w_t τ_t to its top --density of |τ| (≥ the k-th largest), elect the sign of the sum of the trimmed vectors, average the entries that agree with it (disjoint mean); θ = θ0 + λ τ_m",
    citation: "Yadav, Tam, Choshen, Raffel, Bansal (2023), TIES-Merging: Resolving Interference When Merging Models, NeurIPS 2023: the method's trim, elect-sign and disjoint-merge steps.") }
