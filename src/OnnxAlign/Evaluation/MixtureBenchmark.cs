using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Evaluation;

/// <summary>What <see cref="MixtureBenchmark.Run"/> measures.</summary>
public sealed record MixtureBenchmarkSettings
{
    /// <summary>Samples of each method at each λ (the KS distances' n).</summary>
    public int Count { get; init; } = 2000;

    /// <summary>The temperatures λ &gt; 0, one row each.</summary>
    public IReadOnlyList<double> Lambdas { get; init; } = [0.5, 0.2, 0.1, 0.05];

    /// <summary>DDIM steps of every method.</summary>
    public int Steps { get; init; } = 100;

    /// <summary>Importance resampling's budgets, as multiples of the mixture's network evaluations (each &gt; 0, ascending).</summary>
    public IReadOnlyList<int> BudgetMultipliers { get; init; } = [1, 3, 10, 30];
}

/// <summary>
/// One λ of <see cref="MixtureBenchmark"/> (<c>bench --kl-mixture</c>'s JSON rows, as <see cref="IO.ReportJson"/> writes
/// them): the KL mixture's cost and KS distance to the ground truth, importance resampling's KS at multiples of that cost,
/// and best-of-N's at the same cost.
/// </summary>
/// <param name="Lambda">λ.</param>
/// <param name="MixtureMethod">The mixture's construction (<see cref="Alignment.MixtureMethod"/>'s name).</param>
/// <param name="MixtureEvaluationsPerSample">The mixture's network evaluations per accepted sample, set-up included.</param>
/// <param name="MixtureAcceptance">The mixture's accepted / proposed.</param>
/// <param name="MixtureKs">The mixture's KS distance to the ground truth.</param>
/// <param name="SirKsByBudgetMultiplier">Importance resampling's KS distance by budget (<c>"3x"</c>: three times the mixture's network evaluations), in the settings' order.</param>
/// <param name="SirBudgetToReachCriticalKs">The least budget at which importance resampling's KS is at most the critical value (<c>"3×"</c>), or <c>"&gt; 30×"</c> beyond the largest.</param>
/// <param name="BestOfNKs">Best-of-N's KS distance at the mixture's evaluations (it samples no law of λ: how far from the tilt it lands).</param>
/// <param name="BestOfN">Best-of-N's N.</param>
/// <param name="KsCritical">The 1 % critical value 1.63/√n of the KS distance.</param>
public sealed record MixtureBenchmarkRow(double Lambda, string MixtureMethod, double MixtureEvaluationsPerSample, double MixtureAcceptance, double MixtureKs,
                                         IReadOnlyDictionary<string, double> SirKsByBudgetMultiplier, string SirBudgetToReachCriticalKs,
                                         double BestOfNKs, int BestOfN, double KsCritical);

/// <summary>What <see cref="MixtureBenchmark.Run"/> found.</summary>
/// <param name="Model">The toy's folder.</param>
/// <param name="Reward">The reward's name.</param>
/// <param name="Steps">DDIM steps.</param>
/// <param name="Count">Samples of each method at each λ.</param>
/// <param name="KsCritical">The 1 % critical value 1.63/√<paramref name="Count"/>.</param>
/// <param name="BudgetMultipliers">Importance resampling's budgets, as multiples of the mixture's evaluations.</param>
/// <param name="Rows">One row per λ.</param>
public sealed record MixtureBenchmarkResult(string Model, string Reward, int Steps, int Count, double KsCritical, IReadOnlyList<int> BudgetMultipliers,
                                            IReadOnlyList<MixtureBenchmarkRow> Rows);

/// <summary>What <see cref="MixtureBenchmark.Run"/> reports as it goes: <see cref="MixtureBenchmarkStarted"/>, then a <see cref="MixtureBenchmarkRowFinished"/> per λ.</summary>
public abstract record MixtureBenchmarkProgress;

/// <summary>The toy's law is read and its network open; the rows follow.</summary>
/// <param name="Model">The toy's folder.</param>
/// <param name="Reward">The reward's name.</param>
/// <param name="Steps">DDIM steps.</param>
/// <param name="Count">Samples of each method at each λ.</param>
/// <param name="KsCritical">The 1 % critical value of the KS distance.</param>
/// <param name="BudgetMultipliers">Importance resampling's budgets, as multiples of the mixture's evaluations.</param>
public sealed record MixtureBenchmarkStarted(string Model, string Reward, int Steps, int Count, double KsCritical, IReadOnlyList<int> BudgetMultipliers)
    : MixtureBenchmarkProgress;

/// <summary>One λ's row is measured.</summary>
/// <param name="Row">The row.</param>
public sealed record MixtureBenchmarkRowFinished(MixtureBenchmarkRow Row) : MixtureBenchmarkProgress;

/// <summary>
/// Network evaluations and accuracy of the KL mixture (DESIGN §2) against importance resampling and best-of-N from p
/// (<c>onnxalign bench --kl-mixture</c>), on a 2-d toy whose law is known (<c>mixture.json</c>, models/toy/gmm2d), so the
/// aligned law of z = ⟨(0.6, 0.8), x⟩ under the reward softplus(z)/λ is known by quadrature (<see cref="FeatureGridLaw"/>).
/// Accuracy is the KS distance to that ground truth; a method "reaches the accuracy" when its KS is below the 1 % critical
/// value 1.63/√n, i.e. it cannot be told from the truth with n samples.
/// </summary>
public static class MixtureBenchmark
{
    /// <summary>The 1 % critical value of the one-sample KS distance with <paramref name="count"/> samples: 1.63/√n.</summary>
    public static double CriticalKs(int count) => 1.63 / Math.Sqrt(count);

    /// <summary>Runs the benchmark on the toy in <paramref name="model"/>.</summary>
    /// <param name="model">The toy's folder (or its model file); it needs a 2-d <c>mixture.json</c>.</param>
    /// <param name="settings">Samples, λ values, steps and budgets; null for the defaults.</param>
    /// <param name="options">How the network's session is made; null for the defaults.</param>
    /// <param name="progress">The start, then each λ's row as it is measured.</param>
    /// <param name="cancellationToken">Stops the benchmark within one network call.</param>
    /// <exception cref="ConfigException">The folder has no 2-d known law (no <c>mixture.json</c>, or one of another dimension).</exception>
    /// <exception cref="ArgumentException">A count, step count, λ or budget that is not positive.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public static MixtureBenchmarkResult Run(string model, MixtureBenchmarkSettings? settings = null, DenoiserOptions? options = null,
                                             IProgress<MixtureBenchmarkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        settings ??= new MixtureBenchmarkSettings();
        int count = settings.Count;
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count, nameof(settings));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(settings.Steps, nameof(settings));
        if (settings.Lambdas.Any(l => !(l > 0) || !double.IsFinite(l))) throw new ArgumentException("every λ must be finite and > 0", nameof(settings));
        var multipliers = settings.BudgetMultipliers.ToArray();
        if (multipliers.Length == 0 || multipliers.Any(m => m <= 0)) throw new ArgumentException("budget multipliers must be > 0 (at least one)", nameof(settings));

        var located = DiffusionModel.Locate(model);
        string lawPath = Path.Combine(located.Directory, "mixture.json");
        if (!File.Exists(lawPath)) throw new ConfigException($"{model} has no mixture.json: the KL-mixture benchmark needs a toy with a known law, e.g. models/toy/gmm2d");
        var mixtureLaw = GaussianMixture.Load(lawPath);
        if (mixtureLaw.Dimension != 2) throw new ConfigException($"{model} is {mixtureLaw.Dimension}-dimensional: the KL-mixture benchmark needs the 2-d toy models/toy/gmm2d");
        using var cancellation = NetworkCancellation.Enter(cancellationToken);
        using var denoiser = located.OpenDenoiser(options);
        var sampler = Sampler.Create("ddim", located.Config, settings.Steps);
        var reward = new FeatureReward("softplus:0.5 of ⟨(0.6, 0.8), x⟩", [0.6f, 0.8f], 1, new FeatureFunction.Softplus(0.5));
        double critical = CriticalKs(count);
        progress?.Report(new MixtureBenchmarkStarted(model, reward.Name, settings.Steps, count, critical, multipliers));

        var rows = new List<MixtureBenchmarkRow>();
        foreach (double lambda in settings.Lambdas)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var truth = new FeatureGridLaw(mixtureLaw, reward, z => reward.Function.Value(z) / lambda, -8, 14, 8001);
            double Ks(float[] samples)
            {
                var z = new double[1];
                return Numerics.KolmogorovSmirnov(Enumerable.Range(0, count).Select(i => { reward.Project(samples.AsSpan(i * 2, 2), z); return z[0]; }),
                                                  v => truth.MarginalCdf(0, v));
            }
            var mixture = new TiltMixtureSampler(denoiser, sampler, reward, lambda).Sample(count, seed: 11);
            double mixtureKs = Ks(mixture.Samples);
            int proposals = (int)(mixture.NetworkEvaluations / sampler.Steps);
            var sirKs = multipliers.Select(m => Ks(Baselines.ImportanceResampling(denoiser, sampler, reward, lambda, proposals * m, count, seed: 11 + m).Samples)).ToArray();
            int perOutput = Math.Max(1, proposals / count);
            double bestOfNKs = Ks(Baselines.BestOfN(denoiser, sampler, reward, perOutput, count, seed: 12).Samples);
            int reached = Array.FindIndex(sirKs, ks => ks <= critical);
            string sirNeeds = reached < 0 ? $"> {multipliers[^1]}×" : $"{multipliers[reached]}×";
            var byBudget = new Dictionary<string, double>();
            for (int i = 0; i < multipliers.Length; i++) byBudget[$"{multipliers[i]}x"] = sirKs[i];
            var row = new MixtureBenchmarkRow(lambda, mixture.Method.ToString(), mixture.EvaluationsPerAccepted, mixture.AcceptanceRate, mixtureKs,
                                              byBudget, sirNeeds, bestOfNKs, perOutput, critical);
            rows.Add(row);
            progress?.Report(new MixtureBenchmarkRowFinished(row));
        }
        return new MixtureBenchmarkResult(model, reward.Name, settings.Steps, count, critical, multipliers, rows);
    }
}
