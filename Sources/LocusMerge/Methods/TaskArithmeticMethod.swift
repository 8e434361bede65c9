/// Task arithmetic: the weighted sum of the task vectors, scaled by λ.
extension GTAMethod { static let taskArithmetic = GTAMethod("task_arithmetic", GTAComposition(), aliases: ["task-arithmetic"],
    summary: "θ = θ0 + λ Σ_t w_t τ_t (a negative weight negates a task)",
    citation: "Ilharco, Ribeiro, Wortsman, Gururangan, Schmidt, Hajishirzi, Farhadi (2023), Editing Models with Task Arithmetic, ICLR 2023, §2 (task vectors) and §4 (addition).") }
