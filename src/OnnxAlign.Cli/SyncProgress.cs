namespace OnnxAlign.Cli;

/// <summary>An <see cref="IProgress{T}"/> that reports on the caller's thread at once (<see cref="Progress{T}"/> posts to the thread pool, so lines would come late and out of order).</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
