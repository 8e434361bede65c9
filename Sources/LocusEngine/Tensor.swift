/// A dense float32 tensor in row-major (C) order. A value type: copies share storage until written.
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count, "Tensor: \(data.count) values for shape \(shape)")
        self.shape = shape; self.data = data
    }
    public init(zeros shape: [Int]) { self.init(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *))) }
    public init(shape: [Int], repeating v: Float) { self.init(shape: shape, data: [Float](repeating: v, count: shape.reduce(1, *))) }

    /// A tensor whose values `body` writes in full (no zero-filling first).
    public init(shape: [Int], uninitialized body: (UnsafeMutableBufferPointer<Float>) -> Void) {
        let n = shape.reduce(1, *)
        self.shape = shape
        self.data = [Float](unsafeUninitializedCapacity: n) { buf, count in body(buf); count = n }
    }

    public var count: Int { data.count }
    /// Size of the first dimension (the batch).
    public var rows: Int { shape.first ?? 1 }
    /// Elements per row.
    public var rowSize: Int { shape.count <= 1 ? 1 : shape.dropFirst().reduce(1, *) }

    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "reshape \(shape) → \(newShape)")
        var t = self; t.shape = newShape; return t
    }
}
