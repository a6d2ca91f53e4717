using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign bench --kl-mixture</c>: network evaluations and accuracy of the KL mixture (DESIGN §2) against importance
/// resampling and best-of-N from p, on gmm2d where the aligned law of z is known by quadrature. Accuracy is the KS
/// distance to the ground truth; a method "reaches the accuracy" when its KS is below the 1 % critical value 1.63/√n,
/// i.e. it cannot be told from the truth with n samples.
/// </summary>
internal static class MixtureBench
{
    private static readonly int[] Multipliers = [1, 3, 10, 30];

    public static JsonArray Run(string toyDirectory, int count)
    {
        var located = DiffusionModel.Locate(toyDirectory);
        string lawPath = Path.Combine(located.Directory, "mixture.json");
        if (!File.Exists(lawPath)) throw new UsageException($"bench --kl-mixture: {toyDirectory} has no mixture.json; it needs a toy with a known law, e.g. models/toy/gmm2d");
        var mixtureLaw = GaussianMixture.Load(lawPath);
        if (mixtureLaw.Dimension != 2) throw new UsageException($"bench --kl-mixture: {toyDirectory} is {mixtureLaw.Dimension}-dimensional; it needs the 2-d toy models/toy/gmm2d");
        using var denoiser = located.OpenDenoiser();
        var sampler = Sampler.Create("ddim", located.Config, 100);
        var reward = new FeatureReward("softplus:0.5 of ⟨(0.6, 0.8), x⟩", [0.6f, 0.8f], 1, new FeatureFunction.Softplus(0.5));
        double critical = 1.63 / Math.Sqrt(count);
        var rows = new JsonArray();
        Console.WriteLine($"KL mixture vs baselines on {toyDirectory} (reward {reward.Name}, DDIM 100 steps, {count} samples; KS critical value {critical:F4})");
        Console.WriteLine($"  {"λ",-6} {"method",-14} {"evals/sample",12} {"acceptance",10} {"KS",8}  SIR KS at 1×, 3×, 10×, 30× the mixture's evaluations   best-of-N KS (1×)");
        foreach (double lambda in new[] { 0.5, 0.2, 0.1, 0.05 })
        {
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
            var sirKs = Multipliers.Select(m => Ks(Baselines.ImportanceResampling(denoiser, sampler, reward, lambda, proposals * m, count, seed: 11 + m).Samples)).ToArray();
            int perOutput = Math.Max(1, proposals / count);
            double bestOfNKs = Ks(Baselines.BestOfN(denoiser, sampler, reward, perOutput, count, seed: 12).Samples);
            int reached = Array.FindIndex(sirKs, ks => ks <= critical);
            string sirNeeds = reached < 0 ? $"> {Multipliers[^1]}×" : $"{Multipliers[reached]}×";
            Console.WriteLine($"  {lambda,-6:G3} {mixture.Method,-14} {mixture.EvaluationsPerAccepted,12:F0} {mixture.AcceptanceRate,10:F3} {mixtureKs,8:F4}  " +
                              $"{string.Join("  ", sirKs.Select(k => k.ToString("F4")))}  (SIR needs {sirNeeds})   {bestOfNKs:F4} (N = {perOutput})");
            rows.Add(new JsonObject
            {
                ["lambda"] = lambda,
                ["mixture_method"] = mixture.Method.ToString(),
                ["mixture_evaluations_per_sample"] = mixture.EvaluationsPerAccepted,
                ["mixture_acceptance"] = mixture.AcceptanceRate,
                ["mixture_ks"] = mixtureKs,
                ["sir_ks_by_budget_multiplier"] = new JsonObject(Multipliers.Zip(sirKs, (m, k) => KeyValuePair.Create($"{m}x", (JsonNode?)k))),
                ["sir_budget_to_reach_critical_ks"] = sirNeeds,
                ["best_of_n_ks"] = bestOfNKs,
                ["best_of_n"] = perOutput,
                ["ks_critical"] = critical,
            });
        }
        return rows;
    }
}
