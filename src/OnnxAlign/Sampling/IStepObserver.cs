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

    /// <summary>Another observer of the same batch resampled it: row b now continues row ancestors[b]'s path.</summary>
    void Resampled(IReadOnlyList<int> ancestors) { }
}

/// <summary>Observers side by side.</summary>
public static class StepObservers
{
    /// <summary>
    /// One observer that calls each in turn. At most one of them may resample a batch (twisted SMC); the others are
    /// told through <see cref="IStepObserver.Resampled"/> so that they follow the particles' paths.
    /// </summary>
    public static IStepObserver? Combine(params IStepObserver?[] observers)
    {
        var present = observers.OfType<IStepObserver>().ToArray();
        return present.Length switch { 0 => null, 1 => present[0], _ => new Combined(present) };
    }

    private sealed class Combined(IStepObserver[] observers) : IStepObserver
    {
        public int[]? AfterStep(int stepsDone, ReadOnlySpan<float> x, ReadOnlySpan<float> denoised, int batchSize)
        {
            int[]? ancestors = null;
            IStepObserver? resampler = null;
            foreach (var observer in observers)
            {
                if (observer.AfterStep(stepsDone, x, denoised, batchSize) is not { } chosen) continue;
                if (ancestors is not null) throw new InvalidOperationException("two observers resampled the same step");
                (ancestors, resampler) = (chosen, observer);
            }
            if (ancestors is not null)
                foreach (var observer in observers)
                    if (!ReferenceEquals(observer, resampler)) observer.Resampled(ancestors);
            return ancestors;
        }

        public void Resampled(IReadOnlyList<int> ancestors)
        {
            foreach (var observer in observers) observer.Resampled(ancestors);
        }
    }
}
