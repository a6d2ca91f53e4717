using OnnxAlign.Core;
namespace OnnxAlign.Model;

/// <summary>
/// The variance-preserving discrete schedule of a diffusers config (DESIGN §0): β_t, ᾱ_t = ∏(1 − β),
/// α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), over the training timesteps 0 … N − 1.
/// </summary>
public sealed class NoiseSchedule
{
    private readonly double[] _betas;
    private readonly double[] _alphasCumprod;

    /// <summary>Builds the schedule a config describes.</summary>
    public NoiseSchedule(SchedulerConfig config)
    {
        Config = config;
        int n = config.NumTrainTimesteps;
        _betas = config.TrainedBetas is { } trained ? trained.ToArray() : Betas(config.BetaSchedule, config.BetaStart, config.BetaEnd, n);
        _alphasCumprod = new double[n];
        double product = 1.0;
        for (int t = 0; t < n; t++)
        {
            product *= 1.0 - _betas[t];
            _alphasCumprod[t] = product;
        }
    }

    /// <summary>The config the schedule was built from.</summary>
    public SchedulerConfig Config { get; }

    /// <summary>N, the number of training timesteps.</summary>
    public int NumTrainTimesteps => _betas.Length;

    /// <summary>β_t per training timestep.</summary>
    public IReadOnlyList<double> BetaValues => _betas;

    /// <summary>ᾱ_t per training timestep.</summary>
    public IReadOnlyList<double> AlphasCumprod => _alphasCumprod;

    /// <summary>ᾱ at a timestep; a non-integer timestep interpolates linearly between grid points.</summary>
    public double AlphaCumprod(double timestep)
    {
        if (timestep < 0 || timestep > NumTrainTimesteps - 1)
            throw new ArgumentOutOfRangeException(nameof(timestep), timestep, $"timestep must lie in [0, {NumTrainTimesteps - 1}]");
        int low = (int)Math.Floor(timestep);
        if (low == timestep) return _alphasCumprod[low];
        double w = timestep - low;
        return (1 - w) * _alphasCumprod[low] + w * _alphasCumprod[low + 1];
    }

    /// <summary>(α_t, σ_t) = (√ᾱ_t, √(1 − ᾱ_t)) at a timestep.</summary>
    public (double Alpha, double Sigma) AlphaSigma(double timestep)
    {
        double alphaBar = AlphaCumprod(timestep);
        return (Math.Sqrt(alphaBar), Math.Sqrt(1 - alphaBar));
    }

    /// <summary>β over N training steps for a named schedule (diffusers' constructors).</summary>
    public static double[] Betas(BetaSchedule schedule, double betaStart, double betaEnd, int n)
    {
        var betas = new double[n];
        switch (schedule)
        {
            case BetaSchedule.Linear:
                for (int i = 0; i < n; i++) betas[i] = betaStart + (betaEnd - betaStart) * i / (n - 1);
                break;
            case BetaSchedule.ScaledLinear:
                double a = Math.Sqrt(betaStart), b = Math.Sqrt(betaEnd);
                for (int i = 0; i < n; i++) { double r = a + (b - a) * i / (n - 1); betas[i] = r * r; }
                break;
            case BetaSchedule.SquaredCosCapV2:
                // Nichol & Dhariwal 2021, eq. 17: ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), β_i = min(1 − ᾱ((i+1)/N)/ᾱ(i/N), 0.999).
                static double AlphaBar(double t) { double c = Math.Cos((t + 0.008) / 1.008 * Math.PI / 2); return c * c; }
                for (int i = 0; i < n; i++) betas[i] = Math.Min(1 - AlphaBar((i + 1.0) / n) / AlphaBar((double)i / n), 0.999);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(schedule));
        }
        return betas;
    }

    /// <summary>
    /// The inference timesteps of DDPM/DDIM-family schedulers (diffusers' <c>set_timesteps</c>), in the order they are visited.
    /// </summary>
    public int[] Timesteps(int steps)
    {
        ValidateSteps(steps);
        int n = NumTrainTimesteps;
        var ts = new int[steps];
        switch (Config.TimestepSpacing)
        {
            case TimestepSpacing.Leading:
                int ratio = n / steps;
                for (int i = 0; i < steps; i++) ts[i] = (steps - 1 - i) * ratio + Config.StepsOffset;
                if (ts[0] >= n)
                    throw new ConfigException($"steps_offset {Config.StepsOffset} with {steps} steps reaches timestep {ts[0]}, beyond the schedule's {n - 1}");
                break;
            case TimestepSpacing.Trailing:
                double step = (double)n / steps;
                for (int i = 0; i < steps; i++) ts[i] = (int)Math.Round(n - i * step, MidpointRounding.ToEven) - 1;
                break;
            case TimestepSpacing.Linspace:
                for (int i = 0; i < steps; i++)
                    ts[i] = (int)Math.Round(Linspace(0, n - 1, steps, steps - 1 - i), MidpointRounding.ToEven);
                break;
        }
        return ts;
    }

    /// <summary>The inference timesteps of DPM-Solver-family schedulers (their <c>set_timesteps</c> differs for linspace and leading).</summary>
    public int[] MultistepTimesteps(int steps)
    {
        ValidateSteps(steps);
        int n = NumTrainTimesteps;
        var ts = new int[steps];
        switch (Config.TimestepSpacing)
        {
            case TimestepSpacing.Linspace:
                for (int i = 0; i < steps; i++)
                    ts[i] = (int)Math.Round(Linspace(0, n - 1, steps + 1, steps - i), MidpointRounding.ToEven);
                break;
            case TimestepSpacing.Leading:
                int ratio = n / (steps + 1);
                for (int i = 0; i < steps; i++) ts[i] = (steps - i) * ratio + Config.StepsOffset;
                if (ts[0] >= n)
                    throw new ConfigException($"steps_offset {Config.StepsOffset} with {steps} steps reaches timestep {ts[0]}, beyond the schedule's {n - 1}");
                break;
            case TimestepSpacing.Trailing:
                return Timesteps(steps);
        }
        return ts;
    }

    private void ValidateSteps(int steps)
    {
        if (steps < 1 || steps > NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(steps), steps, $"steps must lie in [1, {NumTrainTimesteps}]");
    }

    // numpy.linspace(start, stop, count)[index]
    private static double Linspace(double start, double stop, int count, int index) =>
        count == 1 ? start : start + (stop - start) * index / (count - 1);
}
