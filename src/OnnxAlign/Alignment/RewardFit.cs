using MathNet.Numerics.LinearAlgebra;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>The structured reward <see cref="RewardFit.Fit"/> produces.</summary>
public enum RewardFitForm
{
    /// <summary>r(x) ≈ ⟨w, x⟩ + b: a linear reward (tilts, constraints, the closed-form prox).</summary>
    Linear,
    /// <summary>For a classifier with a log-softmax card: every class logit fitted linearly, r = log-softmax at the index (low-rank, k = classes: mixtures, constraints, prox).</summary>
    LogProb,
}

/// <summary>A fit of a network reward by a structured one (DESIGN §8: "the regression step turns any ONNX classifier into a linear or low-rank reward").</summary>
/// <param name="W">Rows × sample values: one row (linear) or one per class (log-prob).</param>
/// <param name="B">One offset per row.</param>
/// <param name="Rows">Rows of <paramref name="W"/>.</param>
/// <param name="ClassNames">A name per row (<c>fitted</c> for the linear form, the card's classes otherwise).</param>
/// <param name="Index">The row (class) the reward is.</param>
/// <param name="TrainSamples">Samples the regression saw.</param>
/// <param name="HeldOutSamples">Samples it did not see, on which the agreement is measured.</param>
/// <param name="HeldOutRSquared">1 − Σ(r − r̂)²/Σ(r − r̄)² on held-out samples.</param>
/// <param name="HeldOutCorrelation">Pearson correlation of r and r̂ on held-out samples.</param>
/// <param name="HeldOutArgmaxAgreement">Log-prob form: how often the fitted and the network's predicted class agree on held-out samples; null otherwise.</param>
/// <param name="TrainRSquared">R² on the training samples (against <paramref name="HeldOutRSquared"/>: overfitting).</param>
public sealed record RewardFitResult(float[] W, float[] B, int Rows, string[] ClassNames, int Index, int TrainSamples, int HeldOutSamples,
                                     double HeldOutRSquared, double HeldOutCorrelation, double? HeldOutArgmaxAgreement, double TrainRSquared);

/// <summary>A fit and the samples it was made on (<see cref="RewardFit.Run"/>).</summary>
/// <param name="Fit">The fitted reward and its agreement.</param>
/// <param name="Source">The samples: base samples of the model, with what they cost.</param>
public sealed record RewardFitRun(RewardFitResult Fit, RewardFitSource Source);

/// <summary>Fits a linear or low-rank reward to a network reward by ridge regression on the pixels.</summary>
public static class RewardFit
{
    /// <summary>The fewest samples a fit takes (it holds some out, and fits on the rest).</summary>
    public const int MinimumSamples = 8;

    /// <summary>The form's name in reports and specs: <c>linear</c> or <c>log-prob</c>.</summary>
    public static string Name(RewardFitForm form) => form switch
    {
        RewardFitForm.Linear => "linear",
        RewardFitForm.LogProb => "log-prob",
        _ => throw new ArgumentOutOfRangeException(nameof(form), form, "not a fit form"),
    };

    /// <summary>
    /// The fit as one call: <paramref name="request"/>'s base samples of <paramref name="network"/> (the projected base law
    /// on <paramref name="range"/>, as the exact methods sample it), then <see cref="Fit"/> of <paramref name="reward"/> on them.
    /// </summary>
    /// <param name="network">The diffusion model (not disposed here).</param>
    /// <param name="range">The data range the base law projects x̂0 onto (null: none).</param>
    /// <param name="sampler">The reverse-time sampler of the base samples.</param>
    /// <param name="reward">The network reward to fit (not disposed here).</param>
    /// <param name="request">Count, batch, seed, NaN policy and cancellation of the base samples.</param>
    /// <param name="form">The structured reward to fit.</param>
    /// <param name="heldOut">The fraction of the samples held out to measure the agreement.</param>
    /// <param name="ridge">The ridge weight, relative to the mean pixel variance.</param>
    /// <param name="progress">The base samples' progress.</param>
    /// <exception cref="ConfigException">The log-prob form for a reward that is not a log-softmax classifier (parameter <c>form</c>), checked before any sample is drawn.</exception>
    /// <exception cref="ArgumentException">Fewer than <see cref="MinimumSamples"/> samples requested, or a reward of another sample size.</exception>
    /// <exception cref="NonFiniteException">A sample turned NaN/±∞ under <see cref="NonFinitePolicy.Stop"/>.</exception>
    /// <exception cref="OperationCanceledException">The request's cancellation fired.</exception>
    public static RewardFitRun Run(IDenoiser network, DataRange? range, Sampler sampler, OnnxReward reward, GenerationRequest request, RewardFitForm form,
                                   double heldOut = 0.25, double ridge = 1e-2, IProgress<GenerationProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(sampler);
        ArgumentNullException.ThrowIfNull(reward);
        ArgumentNullException.ThrowIfNull(request);
        if (reward.Size != network.SampleSize)
            throw new ArgumentException($"the reward takes samples of {reward.Size} values, the model's have {network.SampleSize}", nameof(reward));
        if (request.Count < MinimumSamples) throw new ArgumentOutOfRangeException(nameof(request), request.Count, $"the fit needs at least {MinimumSamples} samples");
        CheckForm(reward, form);
        var run = Generation.Run(ExactTilt.BaseLaw(network, range), sampler, request, progress is null ? null : progress.Report);
        var fit = Fit(reward, run.Samples, form, heldOut, ridge);
        return new RewardFitRun(fit, RewardFitSource.Generated(run.Count, sampler, request.Seed, run.NetworkEvaluations));
    }

    /// <summary>
    /// Writes the fit into <paramref name="directory"/> (which must exist) as a linear classifier folder (<see cref="LinearClassifierFiles"/>:
    /// what <c>class:fitted@DIR</c> or <c>log-prob:NAME@DIR</c> reads) and <paramref name="report"/> as <c>fit.json</c> beside it.
    /// </summary>
    /// <returns>The names of the files written.</returns>
    public static IReadOnlyList<string> WriteFolder(string directory, RewardFitResult fit, RewardFitReport report)
    {
        ArgumentNullException.ThrowIfNull(fit);
        ArgumentNullException.ThrowIfNull(report);
        var files = LinearClassifierFiles.Write(directory, fit.W, fit.B, fit.ClassNames).ToList();
        ReportJson.WriteFile(Path.Combine(directory, RewardFitReport.FileName), ReportJson.ToNode(report));
        files.Add(RewardFitReport.FileName);
        return files;
    }

    private static void CheckForm(OnnxReward reward, RewardFitForm form)
    {
        if (form == RewardFitForm.LogProb && reward.Card.Transform != "log_softmax")
            throw ConfigException.For("form", $"log-prob fits a classifier whose card says 'transform': 'log_softmax'; {reward.Card.Source} says '{reward.Card.Transform}' (use the linear form)");
    }

    /// <summary>
    /// Fits <paramref name="reward"/> on <paramref name="samples"/> (e.g. base samples of the model): the last
    /// <paramref name="heldOut"/> fraction is held out and measures the agreement. Ridge α = <paramref name="ridge"/>·tr(XᵀX)/d on centred pixels.
    /// </summary>
    /// <exception cref="ConfigException">Too few samples, or the log-prob form for a reward that is not a log-softmax classifier (parameter <c>form</c>).</exception>
    public static RewardFitResult Fit(OnnxReward reward, ReadOnlySpan<float> samples, RewardFitForm form, double heldOut = 0.25, double ridge = 1e-2)
    {
        int d = reward.Size, n = samples.Length / d;
        if (!(heldOut is > 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(heldOut), heldOut, "expected a value in (0, 1)");
        if (!(ridge >= 0) || double.IsInfinity(ridge)) throw new ArgumentOutOfRangeException(nameof(ridge), ridge, "expected a finite value ≥ 0");
        int test = Math.Max(2, (int)Math.Round(n * heldOut)), train = n - test;
        if (train < 4) throw ConfigException.For("samples", $": {n} samples leave {train} to fit on; give at least {MinimumSamples}");
        CheckForm(reward, form);
        var r = reward.EvaluateBatch(samples);
        int classes = reward.Model.OutputSizes[0];
        var logits = form == RewardFitForm.LogProb ? reward.Outputs(samples) : null;
        int rows = form == RewardFitForm.LogProb ? classes : 1;

        // Targets: the reward itself (linear) or every class logit (log-prob), one column each.
        var x = Matrix<double>.Build.Dense(train, d);
        var means = new double[d];
        for (int i = 0; i < train; i++) for (int j = 0; j < d; j++) means[j] += samples[i * d + j] / (double)train;
        for (int i = 0; i < train; i++) for (int j = 0; j < d; j++) x[i, j] = samples[i * d + j] - means[j];
        var y = Matrix<double>.Build.Dense(train, rows, (i, c) => logits is null ? r[i] : logits[i * classes + c]);
        var yMeans = Enumerable.Range(0, rows).Select(c => y.Column(c).Average()).ToArray();
        for (int c = 0; c < rows; c++) for (int i = 0; i < train; i++) y[i, c] -= yMeans[c];
        var gram = x.TransposeThisAndMultiply(x);
        double alpha = Math.Max(ridge * gram.Trace() / d, 1e-9);
        for (int j = 0; j < d; j++) gram[j, j] += alpha;
        var coefficients = gram.Cholesky().Solve(x.TransposeThisAndMultiply(y));   // d × rows

        var w = new float[rows * d];
        var b = new float[rows];
        for (int c = 0; c < rows; c++)
        {
            double offset = yMeans[c];
            for (int j = 0; j < d; j++)
            {
                w[c * d + j] = (float)coefficients[j, c];
                offset -= coefficients[j, c] * means[j];
            }
            b[c] = (float)offset;
        }

        // What the fitted reward says of each sample, and whether it picks the network's class.
        var fitted = new double[n];
        var agree = new bool[n];
        var row = new double[rows];
        for (int i = 0; i < n; i++)
        {
            var xi = samples.Slice(i * d, d);
            for (int c = 0; c < rows; c++) row[c] = System.Numerics.Tensors.TensorPrimitives.Dot(w.AsSpan(c * d, d), xi) + b[c];
            if (logits is null) { fitted[i] = row[0]; continue; }
            fitted[i] = row[reward.Index] - Numerics.LogSumExp(row);
            agree[i] = Numerics.ArgMax<double>(row) == Numerics.ArgMax<float>(logits.AsSpan(i * classes, classes));
        }
        var held = Enumerable.Range(train, test).ToArray();
        var seen = Enumerable.Range(0, train).ToArray();
        string[] names = form == RewardFitForm.LogProb
            ? Enumerable.Range(0, classes).Select(c => c < reward.Card.ClassNames.Length ? reward.Card.ClassNames[c] : c.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray()
            : ["fitted"];
        return new RewardFitResult(w, b, rows, names, form == RewardFitForm.LogProb ? reward.Index : 0, train, test,
            RSquared(r, fitted, held), Correlation(r, fitted, held), logits is null ? null : held.Average(i => agree[i] ? 1.0 : 0.0), RSquared(r, fitted, seen));
    }

    private static double RSquared(double[] y, double[] fit, int[] rows)
    {
        double mean = rows.Average(i => y[i]);
        double total = rows.Sum(i => (y[i] - mean) * (y[i] - mean)), residual = rows.Sum(i => (y[i] - fit[i]) * (y[i] - fit[i]));
        return total > 0 ? 1 - residual / total : double.NaN;
    }

    private static double Correlation(double[] y, double[] fit, int[] rows)
    {
        double my = rows.Average(i => y[i]), mf = rows.Average(i => fit[i]);
        double sxy = rows.Sum(i => (y[i] - my) * (fit[i] - mf)), sxx = rows.Sum(i => (y[i] - my) * (y[i] - my)), syy = rows.Sum(i => (fit[i] - mf) * (fit[i] - mf));
        return sxx > 0 && syy > 0 ? sxy / Math.Sqrt(sxx * syy) : double.NaN;
    }
}
