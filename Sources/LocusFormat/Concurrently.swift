import Dispatch

/// Runs two closures at the same time and waits for both (the second on the calling thread).
/// Used to overlap hashing with I/O; the closures must not touch the same state.
public enum Concurrently {
    public static func run(_ background: @escaping () -> Void, _ foreground: () throws -> Void) throws {
        nonisolated(unsafe) let work = background
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global(qos: .userInitiated).async { work(); done.signal() }
        defer { done.wait() }
        try foreground()
    }
}
