#if canImport(Glibc)
import Glibc
#endif

/// Softmax cross-entropy over logits [B, C], mean over the batch, with optional label smoothing
/// ε (PyTorch: target = (1 − ε)·onehot + ε/C).
public struct CrossEntropy: Sendable {
    public var labelSmoothing: Float = 0
    public init(labelSmoothing: Float = 0) { self.labelSmoothing = labelSmoothing }

    public struct Result: Sendable {
        public var loss: Float
        public var probabilities: Tensor
        /// d loss / d logits.
        public var gradient: Tensor
        public var correct: Int
        public var predictions: [Int]
    }

    public func callAsFunction(_ logits: Tensor, labels: [Int]) -> Result {
        let b = logits.rows, c = logits.rowSize
        var probs = Tensor(zeros: logits.shape)
        var grad = Tensor(zeros: logits.shape)
        var loss: Double = 0
        var correct = 0
        var predictions = [Int](repeating: 0, count: b)
        let eps = labelSmoothing
        probs.data.withUnsafeMutableBufferPointer { p in grad.data.withUnsafeMutableBufferPointer { g in logits.data.withUnsafeBufferPointer { z in
            for r in 0..<b {
                let row = r * c
                var m = -Float.infinity, arg = 0
                for j in 0..<c where z[row + j] > m { m = z[row + j]; arg = j }
                predictions[r] = arg
                if arg == labels[r] { correct += 1 }
                var s: Float = 0
                for j in 0..<c { let e = expf(z[row + j] - m); p[row + j] = e; s += e }
                let logS = logf(s)
                var rowLoss: Float = 0
                for j in 0..<c {
                    p[row + j] /= s
                    let target = (j == labels[r] ? 1 - eps : 0) + eps / Float(c)
                    rowLoss -= target * (z[row + j] - m - logS)
                    g[row + j] = (p[row + j] - target) / Float(b)
                }
                loss += Double(rowLoss)
            }
        } } }
        return Result(loss: Float(loss / Double(b)), probabilities: probs, gradient: grad, correct: correct, predictions: predictions)
    }
}
