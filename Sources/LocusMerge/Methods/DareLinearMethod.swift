/// DARE-linear: random sparsification (drop and rescale), then the weighted sum.
extension GTAMethod { static let dareLinear = GTAMethod("dare_linear", GTAComposition(random: true),
    summary: "drop each stored entry with probability --drop-rate p (seeded by --seed), rescale the kept ones by 1/(1−p) (--no-rescale: without), then θ = θ0 + λ Σ_t w_t τ̃_t",
    citation: "Yu, Yu, Yu, Huang, Li (2024), Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free Lunch, ICML 2024: DARE (drop and rescale) before a sum.") }
