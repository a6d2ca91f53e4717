using System.Numerics.Tensors;
using OnnxAlign.Core;
using OnnxAlign.Sampling;

namespace OnnxAlign.Estimation;

/// <summary>A direction v along which the drift of ⟨v, x̂0_t⟩ is watched.</summary>
/// <param name="Name">What it is (<c>theta</c>, <c>mean</c>, <c>random-1</c>, …).</param>
/// <param name="Vector">A unit vector of one sample's size.</param>
public sealed record DriftDirection(string Name, float[] Vector);

/// <summary>
/// When a drift counts as one: both statistically (z) and in size, relative to the spread of the final ⟨v, x0⟩, at a
/// step whose signal level ᾱ_t is at least <paramref name="MinimumAlphaBar"/>. Below it x̂0 = (x − σε̂)/α is the
/// network's error amplified by σ/α ≥ 10 and then projected onto the data range, for the base network as much as for
/// a tilt (measured on models/fashion: the untilted DDPM's x̂0 drifts by 3 sd there), so it says nothing about the tilt.
/// </summary>
/// <param name="Z">A step's paired drift must exceed this many standard errors …</param>
/// <param name="Relative">… and this fraction of the standard deviation of ⟨v, x0⟩ over the samples …</param>
/// <param name="MinimumAlphaBar">… at a step with ᾱ_t at least this.</param>
public sealed record DriftThresholds(double Z = 4.0, double Relative = 0.2, double MinimumAlphaBar = 0.02);

/// <summary>The drift of one direction over the steps of a run.</summary>
/// <param name="Name">The direction's name.</param>
/// <param name="Means">Per step: the sample mean m_t of ⟨v, x̂0_t⟩.</param>
/// <param name="Drifts">Per step: the mean paired difference ⟨v, x̂0_t⟩ − ⟨v, x0⟩ over the samples (x0 the final sample).</param>
/// <param name="StandardErrors">Per step: the standard error of <paramref name="Drifts"/>.</param>
/// <param name="FinalMean">Mean of ⟨v, x0⟩ over the final samples.</param>
/// <param name="FinalStd">Standard deviation of ⟨v, x0⟩ over the final samples.</param>
/// <param name="MaxAbsZ">max_t |drift_t| / se_t over the judged steps (ᾱ_t ≥ <see cref="DriftThresholds.MinimumAlphaBar"/>).</param>
/// <param name="MaxRelativeDrift">max_t |drift_t| / sd(⟨v, x0⟩) over the judged steps.</param>
/// <param name="WorstStep">The step (0-based) of the largest relative drift among steps that are significant, else of the largest z.</param>
/// <param name="IsDrifting">True when some step drifts by both thresholds.</param>
public sealed record DirectionDrift(string Name, double[] Means, double[] Drifts, double[] StandardErrors, double FinalMean, double FinalStd,
                                    double MaxAbsZ, double MaxRelativeDrift, int WorstStep, bool IsDrifting);

/// <summary>What <see cref="DriftDiagnostic"/> found over a run.</summary>
/// <param name="Timesteps">The visited timesteps, one per step.</param>
/// <param name="Directions">One entry per watched direction.</param>
/// <param name="Samples">Samples observed.</param>
/// <param name="Thresholds">The thresholds applied.</param>
public sealed record DriftReport(IReadOnlyList<int> Timesteps, IReadOnlyList<DirectionDrift> Directions, int Samples, DriftThresholds Thresholds)
{
    /// <summary>True when any direction drifts: the sampler does not sample the law it is meant to (DESIGN §1d).</summary>
    public bool IsDrifting => Directions.Any(d => d.IsDrifting);

    /// <summary>The largest relative drift over the directions (for choosing a proposal scale).</summary>
    public double MaxRelativeDrift => Directions.Count == 0 ? 0 : Directions.Max(d => d.MaxRelativeDrift);

    /// <summary>The largest z over the directions.</summary>
    public double MaxAbsZ => Directions.Count == 0 ? 0 : Directions.Max(d => d.MaxAbsZ);
}

/// <summary>
/// The free diagnostic of DESIGN §1d. For an exact sampler of q, m_t = E⟨v, x̂0^q_t(x_t)⟩ is the same at every step:
/// x̂0^q_t = E_q[x0 | x_t] and the tower property give E_q⟨v, x0⟩. So the paired difference
/// d_t = ⟨v, x̂0_t⟩ − ⟨v, x0⟩ of each sample has mean 0 at every step, whatever q is, with no base samples needed; a
/// trained network evaluated where it never was (a large tilt's shifted input) breaks it. The observer records
/// ⟨v, x̂0_t⟩ for each sample and step of a run (following the particles through resampling) and reports, per
/// direction and step, the mean drift with its standard error. Thread-safe across batches.
/// </summary>
public sealed class DriftDiagnostic : IRunObserver
{
    private readonly DriftDirection[] _directions;
    private readonly int _steps;
    private readonly Dictionary<int, BatchRecord> _open = [];
    private readonly double[,] _sumMean, _sumDiff, _sumDiffSq;
    private readonly double[] _sumFinal, _sumFinalSq;
    private int _samples;

    private readonly double[] _alphaBars;

    /// <summary>Watches <paramref name="directions"/> over runs of <paramref name="sampler"/>.</summary>
    public DriftDiagnostic(IReadOnlyList<DriftDirection> directions, Sampler sampler, DriftThresholds? thresholds = null)
    {
        var timesteps = sampler.Timesteps;
        _alphaBars = timesteps.Select(t => sampler.Schedule.AlphasCumprod[t]).ToArray();
        if (directions.Count == 0) throw new ArgumentException("no directions", nameof(directions));
        int size = directions[0].Vector.Length;
        if (directions.Any(d => d.Vector.Length != size)) throw new ArgumentException("directions of different sizes", nameof(directions));
        _directions = [.. directions];
        Timesteps = [.. timesteps];
        _steps = timesteps.Count;
        Thresholds = thresholds ?? new DriftThresholds();
        int k = _directions.Length;
        (_sumMean, _sumDiff, _sumDiffSq) = (new double[_steps, k], new double[_steps, k], new double[_steps, k]);
        (_sumFinal, _sumFinalSq) = (new double[k], new double[k]);
    }

    /// <summary>The visited timesteps.</summary>
    public IReadOnlyList<int> Timesteps { get; }

    /// <summary>The thresholds of <see cref="Report"/>.</summary>
    public DriftThresholds Thresholds { get; }

    /// <summary>
    /// θ/‖θ‖ (when θ ≠ 0), the constant direction 1/√d (overall brightness) and two fixed pseudo-random unit directions:
    /// the reward's own direction and directions it does not favour.
    /// </summary>
    public static IReadOnlyList<DriftDirection> DefaultDirections(ReadOnlySpan<float> theta)
    {
        int d = theta.Length;
        var list = new List<DriftDirection>();
        float norm = TensorPrimitives.Norm(theta);
        if (norm > 0)
        {
            var unit = new float[d];
            TensorPrimitives.Divide(theta, norm, unit);
            list.Add(new DriftDirection("theta", unit));
        }
        var constant = new float[d];
        Array.Fill(constant, (float)(1 / Math.Sqrt(d)));
        list.Add(new DriftDirection("mean", constant));
        for (int r = 1; r <= 2; r++)
        {
            var v = new float[d];
            new NoiseStream(0x5EED_D1F7, r).NextGaussian(v);
            TensorPrimitives.Divide(v, TensorPrimitives.Norm(v), v);
            list.Add(new DriftDirection($"random-{r}", v));
        }
        return list;
    }

    /// <inheritdoc/>
    public IStepObserver? BeginBatch(int firstIndex, int batchSize)
    {
        var record = new BatchRecord(this, batchSize);
        lock (_open) _open[firstIndex] = record;
        return record;
    }

    /// <inheritdoc/>
    public void EndBatch(int firstIndex, ReadOnlySpan<float> samples, int batchSize)
    {
        BatchRecord record;
        lock (_open)
        {
            if (!_open.Remove(firstIndex, out record!)) return;
        }
        int k = _directions.Length, size = _directions[0].Vector.Length;
        if (record.StepsSeen != _steps) return;  // an interrupted batch
        var final = new double[batchSize * k];
        Project(samples, batchSize, size, final);
        lock (_sumFinal)
        {
            for (int b = 0; b < batchSize; b++)
            {
                for (int j = 0; j < k; j++)
                {
                    double f = final[b * k + j];
                    _sumFinal[j] += f;
                    _sumFinalSq[j] += f * f;
                    for (int s = 0; s < _steps; s++)
                    {
                        double v = record.Values[s][b * k + j];
                        _sumMean[s, j] += v;
                        _sumDiff[s, j] += v - f;
                        _sumDiffSq[s, j] += (v - f) * (v - f);
                    }
                }
            }
            _samples += batchSize;
        }
    }

    /// <summary>The drift of every direction over the batches finished so far.</summary>
    public DriftReport Report()
    {
        lock (_sumFinal)
        {
            int n = _samples, k = _directions.Length;
            var result = new List<DirectionDrift>();
            for (int j = 0; j < k; j++)
            {
                double finalMean = n > 0 ? _sumFinal[j] / n : double.NaN;
                double finalStd = n > 1 ? Math.Sqrt(Math.Max(_sumFinalSq[j] - n * finalMean * finalMean, 0) / (n - 1)) : double.NaN;
                var means = new double[_steps];
                var drifts = new double[_steps];
                var errors = new double[_steps];
                double maxZ = 0, maxRelative = 0, worstSignificant = -1;
                int worst = 0, worstZ = 0;
                bool drifting = false;
                for (int s = 0; s < _steps; s++)
                {
                    means[s] = n > 0 ? _sumMean[s, j] / n : double.NaN;
                    drifts[s] = n > 0 ? _sumDiff[s, j] / n : double.NaN;
                    double variance = n > 1 ? Math.Max(_sumDiffSq[s, j] - n * drifts[s] * drifts[s], 0) / (n - 1) : double.NaN;
                    errors[s] = Math.Sqrt(variance / n);
                    // A drift of exactly 0 with no spread (the last step, whose x̂0 is the sample) has z = 0.
                    double z = Math.Abs(drifts[s]) == 0 ? 0 : Math.Abs(drifts[s]) / errors[s];
                    double relative = finalStd > 0 ? Math.Abs(drifts[s]) / finalStd : (Math.Abs(drifts[s]) > 0 ? double.PositiveInfinity : 0);
                    if (!double.IsFinite(z) && !double.IsPositiveInfinity(z)) z = 0;
                    if (_alphaBars[s] < Thresholds.MinimumAlphaBar) continue;   // reported, not judged (see DriftThresholds)
                    if (z > maxZ) (maxZ, worstZ) = (z, s);
                    maxRelative = Math.Max(maxRelative, relative);
                    if (z > Thresholds.Z && relative > Thresholds.Relative)
                    {
                        drifting = true;
                        if (relative > worstSignificant) (worstSignificant, worst) = (relative, s);
                    }
                }
                result.Add(new DirectionDrift(_directions[j].Name, means, drifts, errors, finalMean, finalStd, maxZ, maxRelative,
                                              drifting ? worst : worstZ, drifting));
            }
            return new DriftReport(Timesteps, result, n, Thresholds);
        }
    }

    private void Project(ReadOnlySpan<float> rows, int batchSize, int size, Span<double> into)
    {
        int k = _directions.Length;
        for (int b = 0; b < batchSize; b++)
            for (int j = 0; j < k; j++)
                into[b * k + j] = TensorPrimitives.Dot(rows.Slice(b * size, size), _directions[j].Vector);
    }

    private sealed class BatchRecord(DriftDiagnostic owner, int batchSize) : IStepObserver
    {
        public double[][] Values { get; } = Enumerable.Range(0, owner._steps).Select(_ => new double[batchSize * owner._directions.Length]).ToArray();

        public int StepsSeen { get; private set; }

        public int[]? AfterStep(int stepsDone, ReadOnlySpan<float> x, ReadOnlySpan<float> denoised, int batch)
        {
            owner.Project(denoised, batch, owner._directions[0].Vector.Length, Values[stepsDone - 1]);
            StepsSeen = stepsDone;
            return null;
        }

        public void Resampled(IReadOnlyList<int> ancestors)
        {
            // Each row's record follows its particle's path: the steps so far are its ancestor's.
            int k = owner._directions.Length;
            for (int s = 0; s < StepsSeen; s++)
            {
                var copy = (double[])Values[s].Clone();
                for (int b = 0; b < ancestors.Count; b++)
                    Array.Copy(copy, ancestors[b] * k, Values[s], b * k, k);
            }
        }
    }
}
