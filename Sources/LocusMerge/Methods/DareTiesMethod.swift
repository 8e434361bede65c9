/// DARE-TIES: random sparsification, then TIES (magnitude trim and sign election) on the result.
extension GTAMethod { static let dareTies = GTAMethod("dare_ties", GTAComposition(random: true, magnitude: true, signElection: true),
    summary: "DARE's drop and rescale (--drop-rate, --rescale, --seed), then TIES on the result: trim to --density (1 keeps every entry left, mergekit's dare_ties), elect the sign, disjoint mean; θ = θ0 + λ τ_m",
    citation: "Yu, Yu, Yu, Huang, Li (2024), Language Models are Super Mario, ICML 2024: DARE as a plug-in before TIES-Merging; Yadav et al. (2023), TIES-Merging, NeurIPS 2023.") }
