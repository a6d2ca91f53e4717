namespace OnnxAlign.Model;

/// <summary>
/// The cancellation of the network calls made on the current flow of execution. A long call (a generation, an SMC
/// run) enters its <see cref="CancellationToken"/> here once; every network call below it, through any stack of
/// denoiser decorators, sees it: <see cref="OnnxDenoiser"/> checks it before each call and ends a running call through
/// ONNX Runtime's <c>RunOptions.Terminate</c>, so a cancelled run stops within one network call.
/// </summary>
public static class NetworkCancellation
{
    private static readonly AsyncLocal<CancellationToken> Token = new();

    /// <summary>The token of the current flow (none when no long call entered one).</summary>
    public static CancellationToken Current => Token.Value;

    /// <summary>Makes <paramref name="token"/> the current flow's cancellation until the returned scope is disposed.</summary>
    public static Scope Enter(CancellationToken token)
    {
        var previous = Token.Value;
        if (token.CanBeCanceled) Token.Value = token;
        return new Scope(previous);
    }

    /// <summary>Restores the previous token when disposed.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly CancellationToken _previous;

        internal Scope(CancellationToken previous) => _previous = previous;

        /// <inheritdoc/>
        public void Dispose() => Token.Value = _previous;
    }
}
