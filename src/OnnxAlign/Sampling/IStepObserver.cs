namespace OnnxAlign.Sampling;

/// <summary>
/// Sees a batch after every step of <see cref="Sampler.Sample"/>: the current x_t and the step's x̂0 (both sample after
/// sample). Diagnostics read them (the drift of DESIGN §1d); twisted SMC (DESIGN §8) weighs the particles and may
/// resample by returning each row's ancestor.
/// </summary>
public interface IStepObserver
{
    /// <summary>Called after step <paramref name="stepsDone"/> (1-based) of a batch.</summary>
    /// <returns>null to go on, or for each row b the row whose sample (and sampler state) replaces it.</returns>
    int[]? AfterStep(int stepsDone, ReadOnlySpan<float> x, ReadOnlySpan<float> denoised, int batchSize);
}
