namespace OnnxAlign.Core;

/// <summary>
/// An <see cref="IProgress{T}"/> that reports on the caller's thread at once. <see cref="Progress{T}"/> posts each
/// report to a synchronisation context or the thread pool, so printed lines would come late and out of order; the
/// library's long calls report on their own thread, and this passes each report straight on.
/// </summary>
/// <typeparam name="T">The progress value.</typeparam>
/// <param name="report">What to do with each report (called on the reporting thread).</param>
public sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    /// <inheritdoc />
    public void Report(T value) => report(value);
}
